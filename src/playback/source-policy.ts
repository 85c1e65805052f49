import { realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { CommandError } from '../supervisor/commands.ts';

/**
 * What may reach FFmpeg from outside (MQTT, HTTP, content). FFmpeg opens far more than media:
 * `lavfi:movie=/any/file` shows a file, `psnr=stats_file=` writes one, `file:`, `concat:`,
 * `subfile:`, `pipe:` and `tcp:` read what they name. Every entry point that takes a source or
 * a URL checks it here; the addon checks again and gives FFmpeg per-kind protocol and demuxer
 * whitelists (native/src/decode/policy.rs), so neither check alone is the only one.
 */

export const ERR_SOURCE_NOT_ALLOWED = 'ERR_SOURCE_NOT_ALLOWED';

/** How a checked source is opened: the addon picks FFmpeg's whitelists by the same kinds. */
export type SourceKind = 'file' | 'http' | 'rtsp';

export interface CheckedSource {
  readonly kind: SourceKind;
  /** What to open: a file resolved to its real path, or the URL as given. */
  readonly source: string;
}

/** Schemes a played URL may have (HLS is http(s)). */
export const PLAY_SCHEMES = ['http', 'https', 'rtsp', 'rtsps'] as const;
/** Schemes for URLs the box fetches or uploads to with Node (content media, screenshots). */
export const WEB_SCHEMES = ['http', 'https'] as const;

const MAX_URL = 4096;

/** The directories a played file may be in, under `dataDir`: files put there, and the content cache. */
export function mediaDirs(dataDir: string): string[] {
  return [join(dataDir, 'media'), join(dataDir, 'cache', 'media')];
}

/** The sentence every refusal ends with. */
export function sourceRules(dirs: readonly string[]): string {
  return `allowed: a media file name or a path inside ${dirs.join(' or ')}, an http:// or https:// URL (HLS too), or an rtsp:// or rtsps:// URL`;
}

/** The scheme a string starts with, as FFmpeg would read one (`subfile,,...:` included). */
function schemeOf(text: string): string | undefined {
  return /^([A-Za-z][A-Za-z0-9+.,-]*):/.exec(text)?.[1];
}

/** Shown in a refusal: a scheme is never a secret, but it can be junk. */
function shown(scheme: string): string {
  return JSON.stringify(scheme.length > 24 ? `${scheme.slice(0, 21)}...` : scheme);
}

/**
 * Why `url` is not an acceptable URL with one of `schemes`, or undefined when it is. The URL is
 * judged as written (FFmpeg and fetch both read it raw): a lowercase scheme, a host, no spaces
 * or control characters. Never quotes the URL itself: it may carry a signature.
 */
export function urlProblem(url: unknown, schemes: readonly string[]): string | undefined {
  const allowed = schemes.map((s) => `${s}://`).join(', ');
  if (typeof url !== 'string' || url === '') return `must be a URL (${allowed})`;
  if (url.length > MAX_URL) return `is longer than ${MAX_URL} characters`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\s\u0000-\u001f\u007f\\]/.test(url)) return 'has spaces, backslashes or control characters';
  const scheme = schemeOf(url);
  if (scheme === undefined) return `has no scheme; allowed: ${allowed}`;
  if (!schemes.includes(scheme) || !url.startsWith(`${scheme}://`)) {
    return `${shown(`${scheme}:`)} is not allowed; allowed: ${allowed}`;
  }
  // Read raw: WHATWG parsing would take "http:///etc" as host "etc"; FFmpeg would not.
  if (/^[/?#@]|^$/.test(url.slice(scheme.length + 3))) return 'has no host';
  try {
    if (new URL(url).hostname === '') return 'has no host';
  } catch {
    return 'is not a valid URL';
  }
  return undefined;
}

function refuse(message: string): never {
  throw new CommandError(ERR_SOURCE_NOT_ALLOWED, message);
}

/** `path` is `root` or below it. */
function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel);
}

function realpathOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

/**
 * A file source: a name (or relative path) looked up in each media directory in turn, or an
 * absolute path inside one. Resolved with realpath, so a symlink out of the directory is
 * refused, and the resolved path is what gets opened.
 */
function fileCheck(source: string, dirs: readonly string[], rules: string): CheckedSource {
  if (source.split('/').includes('..')) refuse(`"..": a source path may not climb out of its directory; ${rules}`);
  const roots = dirs.map((dir) => ({ dir: resolve(dir), real: realpathOrUndefined(dir) }));
  const candidates = isAbsolute(source)
    ? roots.filter((r) => inside(r.dir, source) || (r.real !== undefined && inside(r.real, source)))
    : roots;
  if (candidates.length === 0) refuse(`${source} is outside the media directories; ${rules}`);
  for (const root of candidates) {
    if (root.real === undefined) continue;
    const real = realpathOrUndefined(isAbsolute(source) ? source : join(root.dir, source));
    if (real === undefined) continue;
    if (!inside(root.real, real)) refuse(`${source} leads out of the media directory (a symlink); ${rules}`);
    if (!statSync(real).isFile()) refuse(`${source} is not a regular file; ${rules}`);
    return { kind: 'file', source: real };
  }
  throw new CommandError('ERR_DECODE_OPEN', `${source}: cannot open: no such file in ${dirs.join(' or ')}`);
}

/**
 * Checks a source asked for from outside and says how to open it. Throws CommandError:
 * `ERR_BAD_ARGUMENT` when it is not a string, `ERR_SOURCE_NOT_ALLOWED` naming what is allowed,
 * `ERR_DECODE_OPEN` when a media file does not exist.
 */
export function sourceCheck(source: unknown, dirs: readonly string[]): CheckedSource {
  if (typeof source !== 'string' || source.trim() === '') {
    throw new CommandError(
      'ERR_BAD_ARGUMENT',
      `"source" must be a media name, path or URL, got ${JSON.stringify(source)}`,
    );
  }
  const rules = sourceRules(dirs);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\u0000-\u001f\u007f]/.test(source)) refuse(`control characters in the source; ${rules}`);
  if (source.startsWith('lavfi:') || source.startsWith('pattern:')) {
    refuse(`generated sources ("lavfi:", "pattern:") are built in only; ${rules}`);
  }
  // A colon before the first slash: FFmpeg would take what comes before it as a protocol.
  const scheme = source.startsWith('/') ? undefined : (schemeOf(source) ?? (/^[^/]*:/.test(source) ? '' : undefined));
  if (scheme === undefined) return fileCheck(source, dirs, rules);
  const problem = urlProblem(source, PLAY_SCHEMES);
  if (problem !== undefined) refuse(`the source ${problem.replace(/; allowed: .*$/, '')}; ${rules}`);
  return { kind: scheme.startsWith('rtsp') ? 'rtsp' : 'http', source };
}
