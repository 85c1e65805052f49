import type { DecodeManager, DecodeRequest, DecoderInfo } from '../native/addon.ts';

/** A source that gave no picture before it failed or before the deadline. */
export const NO_PICTURE = 'ERR_DECODE_NO_PICTURE';
/** How long a source may take from open to its first decoded frame (a slow server, a long GOP). */
export const FIRST_PICTURE_TIMEOUT_MS = 15_000;
const POLL_MS = 10;

/** Why a source was not switched to: `code` is an ERR_ code, `detail` names the source and the reason. */
export class FirstPictureError extends Error {
  readonly code: string;
  readonly detail: string;

  constructor(code: string, detail: string) {
    super(`${code}: ${detail}`);
    this.name = 'FirstPictureError';
    this.code = code;
    this.detail = detail;
  }
}

export interface FirstPictureOptions {
  readonly timeoutMs?: number;
}

/**
 * Gives `consumer` the decoder for `request`, prerolled, and resolves only once that decoder has
 * a decoded frame: only then may outputs be switched to it, so a source that opens but never
 * yields a picture (a 404 behind a redirect, an MP4 whose index cannot be reached without Range)
 * leaves the outputs on what they showed. The addon's preroll waits for that frame itself; the
 * poll after it holds the same promise against an addon that resolves at open. On failure the
 * consumer is released and the rejection is a FirstPictureError with the addon's ERR_ code.
 */
export async function acquireFirstPicture(
  decode: DecodeManager,
  consumer: string,
  request: DecodeRequest,
  options: FirstPictureOptions = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? FIRST_PICTURE_TIMEOUT_MS;
  try {
    await decode.acquireAsync(consumer, { ...request, preroll: true });
  } catch (error) {
    releaseQuietly(decode, consumer);
    throw firstPictureErrorOf(error, request.source);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const d = (decode.status().decoders as DecoderInfo[]).find((x) => x.consumers.includes(consumer));
    if (d && d.frames > 0 && !d.failure) return;
    const why = !d
      ? 'the decoder went away before its first frame'
      : d.failure
        ? `${d.failureCode ? `${d.failureCode}: ` : ''}${d.failure}`
        : Date.now() > deadline
          ? `no frame decoded within ${timeoutMs} ms`
          : undefined;
    if (why !== undefined) {
      releaseQuietly(decode, consumer);
      throw new FirstPictureError(NO_PICTURE, `${request.source}: ${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** The addon's error as a coded one: its `code`, or the code its message leads with. */
export function firstPictureErrorOf(error: unknown, source: string): FirstPictureError {
  if (error instanceof FirstPictureError) return error;
  const e = error as { code?: unknown; message?: unknown };
  const message = String(e?.message ?? error);
  const led = /^(ERR_[A-Z0-9_]+): (.*)$/s.exec(message);
  if (typeof e?.code === 'string' && e.code.startsWith('ERR_')) {
    return new FirstPictureError(e.code, led?.[1] === e.code ? (led[2] as string) : message);
  }
  if (led) return new FirstPictureError(led[1] as string, led[2] as string);
  return new FirstPictureError(NO_PICTURE, `${source}: ${message}`);
}

/** Lets go of a consumer that may never have been acquired, or whose decoder failed and is gone. */
export function releaseQuietly(decode: Pick<DecodeManager, 'release'>, consumer: string): void {
  try {
    decode.release(consumer);
  } catch {
    // Nothing to let go.
  }
}
