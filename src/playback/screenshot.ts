import type { Screens } from '../display/screens.ts';
import { type CommandDefinition, CommandError } from '../supervisor/commands.ts';
import { urlProblem, WEB_SCHEMES } from './source-policy.ts';

/** Replies travel over MQTT: a full-size JPEG as base64 stays well under the broker's limits up to 4K. */
const UPLOAD_TIMEOUT_MS = 30_000;

export interface ScreenshotDeps {
  readonly screens: () => Screens | undefined;
  /** Injected for tests; the global fetch otherwise. */
  readonly fetch?: typeof fetch;
}

export interface Shot {
  readonly output: string;
  readonly width: number;
  readonly height: number;
  readonly bytes: number;
  /** The JPEG, when no upload URL was given. */
  readonly jpegBase64?: string;
  /** Where it was PUT, when an upload URL was given. */
  readonly uploadedTo?: string;
}

/**
 * `screenshot`: a JPEG of what each output really shows, read from the engine's scanout buffer
 * (KMS) or the virtual scanout. Arguments: `outputs` (default: all), `width` (scale down),
 * `quality` (1-100), `uploadUrl` (HTTP(S) PUT target; `{output}` in it is replaced by the
 * output's name, otherwise `?output=<name>` is added when there are several outputs).
 */
export function screenshotCommand(deps: ScreenshotDeps): CommandDefinition {
  return {
    name: 'screenshot',
    description: 'JPEG of what each output shows now, returned as base64 or PUT to uploadUrl.',
    async handler(args) {
      const screens = deps.screens();
      if (!screens) throw new CommandError('ERR_NOT_READY', 'no outputs yet: the display has not started');
      const { outputs, width, quality, uploadUrl } = screenshotArgs(args);
      const names = screens.outputs().map((o) => o.name);
      const unknown = (outputs ?? []).filter((o) => !names.includes(o));
      if (unknown.length > 0) {
        throw new CommandError(
          'ERR_BAD_ARGUMENT',
          `no output ${unknown.map((u) => `"${u}"`).join(', ')}; outputs: ${names.join(', ') || 'none'}`,
        );
      }
      const wanted = outputs ?? names;
      const shots: Shot[] = [];
      for (const name of wanted) {
        const jpeg = await screens.snapshotJpeg(name, width, quality);
        if (!jpeg) {
          throw new CommandError(
            'ERR_NO_PICTURE',
            `output ${name} shows nothing the CPU can read (nothing yet, or a GPU buffer)`,
          );
        }
        const base = { output: name, width: jpeg.width, height: jpeg.height, bytes: jpeg.jpeg.length };
        if (!uploadUrl) {
          shots.push({ ...base, jpegBase64: jpeg.jpeg.toString('base64') });
          continue;
        }
        const target = uploadTarget(uploadUrl, name, wanted.length > 1);
        await upload(deps.fetch ?? fetch, target, jpeg.jpeg);
        shots.push({ ...base, uploadedTo: target });
      }
      return { shots };
    },
  };
}

function screenshotArgs(args: Record<string, unknown>): {
  outputs?: string[];
  width?: number;
  quality?: number;
  uploadUrl?: string;
} {
  const { outputs, width, quality, uploadUrl } = args;
  if (
    outputs !== undefined &&
    (!Array.isArray(outputs) || outputs.length === 0 || !outputs.every((o) => typeof o === 'string'))
  ) {
    throw new CommandError('ERR_BAD_ARGUMENT', `"outputs" must be a non-empty list of output names`);
  }
  if (width !== undefined && (!Number.isInteger(width) || (width as number) < 16 || (width as number) > 7680)) {
    throw new CommandError('ERR_BAD_ARGUMENT', `"width" must be an integer 16-7680, got ${JSON.stringify(width)}`);
  }
  if (quality !== undefined && (!Number.isInteger(quality) || (quality as number) < 1 || (quality as number) > 100)) {
    throw new CommandError('ERR_BAD_ARGUMENT', `"quality" must be an integer 1-100, got ${JSON.stringify(quality)}`);
  }
  if (uploadUrl !== undefined) {
    const problem = urlProblem(
      typeof uploadUrl === 'string' ? uploadUrl.replaceAll('{output}', 'x') : uploadUrl,
      WEB_SCHEMES,
    );
    if (problem !== undefined) {
      throw new CommandError('ERR_BAD_ARGUMENT', `"uploadUrl" must be an http:// or https:// URL: it ${problem}`);
    }
  }
  return {
    ...(outputs !== undefined ? { outputs: [...new Set(outputs as string[])] } : {}),
    ...(width !== undefined ? { width: width as number } : {}),
    ...(quality !== undefined ? { quality: quality as number } : {}),
    ...(uploadUrl !== undefined ? { uploadUrl: uploadUrl as string } : {}),
  };
}

function uploadTarget(url: string, output: string, several: boolean): string {
  if (url.includes('{output}')) return url.replaceAll('{output}', encodeURIComponent(output));
  if (!several) return url;
  const u = new URL(url);
  u.searchParams.set('output', output);
  return u.toString();
}

async function upload(fetcher: typeof fetch, target: string, jpeg: Buffer): Promise<void> {
  let response: Response;
  try {
    response = await fetcher(target, {
      method: 'PUT',
      headers: { 'content-type': 'image/jpeg' },
      body: new Uint8Array(jpeg),
      signal: AbortSignal.timeout(UPLOAD_TIMEOUT_MS),
    });
  } catch (error) {
    // The URL may carry a signed token: name the host only.
    throw new CommandError('ERR_UPLOAD', `PUT to ${new URL(target).host} failed: ${(error as Error).message}`);
  }
  if (!response.ok) {
    throw new CommandError(
      'ERR_UPLOAD',
      `PUT to ${new URL(target).host} answered ${response.status} ${response.statusText}`,
    );
  }
}
