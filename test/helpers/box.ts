import type { ExecutionContext } from 'ava';
import { displayCreate } from '../../src/extensions/display.ts';
import { type HttpDeps, httpCreate } from '../../src/extensions/http.ts';
import { playbackCreate } from '../../src/extensions/playback.ts';
import type { ExtensionDefinition } from '../../src/supervisor/extension.ts';
import { type Supervisor, supervisorStart, until } from './supervisor.ts';

export interface Box extends Supervisor {
  /** The status endpoint's base URL, e.g. http://127.0.0.1:41234 (no trailing slash). */
  readonly url: string;
}

/**
 * A real supervisor as on a box without a GPU: playback plays the built-in demo (asked for:
 * `file.playback` replaces it, `{ demo: false }` gives the installer screen) on two virtual
 * outputs (software decoding, previews every second) and the status endpoint listens on a free
 * loopback port. `extra` extensions start after the display (test-only fault injection).
 */
export async function boxStart(
  t: ExecutionContext,
  file: Record<string, unknown> = {},
  extra: ExtensionDefinition[] = [],
  httpDeps: Partial<HttpDeps> = {},
): Promise<Box> {
  const sup = await supervisorStart(
    t,
    [
      { name: 'playback', create: playbackCreate },
      { name: 'display', create: displayCreate },
      ...extra,
      { name: 'http', create: (c) => httpCreate(c, httpDeps) },
    ],
    {
      decode: { hardware: 'software' },
      preview: { intervalS: 1, width: 320 },
      playback: { demo: true },
      ...file,
      http: { port: 0, ...(file.http as object) },
    },
  );
  const listening = await until(() => sup.controller.bus.latest('http.listening'), 'the status endpoint', 5000);
  return { ...sup, url: listening.url.replace(/\/$/, '') };
}

export async function getJson(
  url: string,
  init?: RequestInit,
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are checked field by field
): Promise<{ status: number; body: any; headers: Headers }> {
  const r = await fetch(url, init);
  const text = await r.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${url}: HTTP ${r.status}, not JSON: ${text.slice(0, 200)}`);
  }
  return { status: r.status, body, headers: r.headers };
}
