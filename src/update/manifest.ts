import type { Fetch } from '../content/download.ts';
import { UpdateError } from './errors.ts';
import { versionValid } from './version.ts';

/** The digest list and its detached signature, as systemd-sysupdate expects them beside the artefacts. */
export const MANIFEST_FILE = 'SHA256SUMS';
export const SIGNATURE_FILE = 'SHA256SUMS.gpg';

/** A digest list longer than this is not ours (two lines of about 100 bytes): refused before it fills memory. */
const MANIFEST_MAX_BYTES = 64 * 1024;
/** An OpenPGP detached signature is a few hundred bytes; a few signatures at most. */
const SIGNATURE_MAX_BYTES = 64 * 1024;

export type ArtefactKind = 'root' | 'uki';

export interface Artefact {
  /** The file name in the artefact directory, e.g. multihead_0.2.0.root.squashfs. */
  readonly name: string;
  readonly kind: ArtefactKind;
  /** Lower-case hex. */
  readonly sha256: string;
}

export interface Manifest {
  readonly version: string;
  /** The root partition image, then the unified kernel image. */
  readonly artefacts: readonly [Artefact, Artefact];
}

/** What `npm run image` names its artefacts: the version is in the name, as sysupdate's @v patterns read it. */
const ARTEFACT = /^multihead_([0-9.]+)\.(root\.squashfs|efi)$/;
/** sha256sum's line: digest, a space, then a space (text mode) or `*` (binary mode), then the name. */
const LINE = /^([0-9a-fA-F]{64}) [ *](.+)$/;

/** A line as an error message shows it: quoted, control characters escaped, long lines cut. */
function shown(line: string): string {
  return JSON.stringify(line.length > 120 ? `${line.slice(0, 120)}...` : line);
}

/**
 * Reads a SHA256SUMS file strictly: exactly the root image and the UKI of one version, each
 * once. Anything else (another file, a second version, a malformed line) is ERR_UPDATE_MANIFEST
 * naming the line, because an installer that copies what a list names must not be handed a
 * list with surprises in it, even a signed one.
 */
export function manifestParse(text: string): Manifest {
  const found = new Map<ArtefactKind, Artefact>();
  let version: string | undefined;
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  lines.forEach((raw, index) => {
    const where = `${MANIFEST_FILE} line ${index + 1} ${shown(raw)}`;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const match = LINE.exec(line);
    if (!match) throw new UpdateError('ERR_UPDATE_MANIFEST', `${where}: not "<sha256 hex>  <file name>"`);
    const [, digest, name] = match as unknown as [string, string, string];
    const artefact = ARTEFACT.exec(name);
    if (!artefact) {
      throw new UpdateError(
        'ERR_UPDATE_MANIFEST',
        `${where}: ${shown(name)} is not an artefact of this firmware (multihead_<version>.root.squashfs or multihead_<version>.efi)`,
      );
    }
    const [, lineVersion, suffix] = artefact as unknown as [string, string, string];
    if (!versionValid(lineVersion)) {
      throw new UpdateError(
        'ERR_UPDATE_MANIFEST',
        `${where}: version ${shown(lineVersion)} is not dotted numbers (e.g. 0.2.0, 2026.12.1)`,
      );
    }
    if (version !== undefined && lineVersion !== version) {
      throw new UpdateError(
        'ERR_UPDATE_MANIFEST',
        `${where}: version ${lineVersion} beside ${version}; one directory holds one version`,
      );
    }
    version = lineVersion;
    const kind: ArtefactKind = suffix === 'efi' ? 'uki' : 'root';
    if (found.has(kind)) throw new UpdateError('ERR_UPDATE_MANIFEST', `${where}: ${name} is listed twice`);
    found.set(kind, { name, kind, sha256: digest.toLowerCase() });
  });
  const root = found.get('root');
  const uki = found.get('uki');
  if (version === undefined || !root || !uki) {
    const missing = [!root && 'the root image (.root.squashfs)', !uki && 'the kernel image (.efi)'].filter(Boolean);
    throw new UpdateError('ERR_UPDATE_MANIFEST', `${MANIFEST_FILE} lacks ${missing.join(' and ')}`);
  }
  return { version, artefacts: [root, uki] };
}

/**
 * The URL of `name` in the artefact directory `base`. A query (a CDN token valid for the whole
 * directory) is kept on every file.
 */
export function artefactUrl(base: string, name: string): string {
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/${encodeURIComponent(name)}`;
  url.hash = '';
  return url.toString();
}

export interface SmallFetch {
  readonly fetch: Fetch;
  readonly timeoutMs: number;
}

/**
 * A small file of the artefact directory, whole, into memory; at most `limit` bytes (a bigger
 * answer is refused while it arrives). A 404 is `missing`; other failures throw.
 */
async function smallFetch(url: string, limit: number, deps: SmallFetch): Promise<Buffer | 'missing'> {
  const signal = AbortSignal.timeout(deps.timeoutMs);
  const response = await deps.fetch(url, { signal, redirect: 'follow' });
  if (response.status === 404 || response.status === 410) {
    await response.body?.cancel();
    return 'missing';
  }
  if (response.status !== 200) {
    await response.body?.cancel();
    const retryable = response.status >= 500 || response.status === 408 || response.status === 429;
    throw new UpdateError('ERR_UPDATE_DOWNLOAD', `HTTP ${response.status} ${response.statusText}`.trim(), {
      retryable,
    });
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of (response.body ?? []) as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > limit) {
      await response.body?.cancel().catch(() => {});
      throw new UpdateError('ERR_UPDATE_MANIFEST', `more than ${limit} bytes; not a digest list or signature`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export interface FetchedManifest {
  readonly text: Buffer;
  readonly signature: Buffer;
}

/**
 * SHA256SUMS and SHA256SUMS.gpg from the artefact directory, as bytes: the signature is checked
 * over exactly these bytes before anything in them is believed. No signature file is
 * ERR_UPDATE_SIGNATURE (an unsigned directory is refused, never "verified" by its digests alone).
 */
export async function manifestFetch(base: string, deps: SmallFetch): Promise<FetchedManifest> {
  const what = async (name: string, limit: number): Promise<Buffer | 'missing'> => {
    try {
      return await smallFetch(artefactUrl(base, name), limit, deps);
    } catch (error) {
      const e = error as Error & { cause?: { code?: string } };
      const detail = e instanceof UpdateError ? e.message : (e.cause?.code ?? e.message);
      // A connection that failed (not an answer that said no) may work a little later.
      const retryable = e instanceof UpdateError ? e.retryable : true;
      throw new UpdateError(
        e instanceof UpdateError ? e.code : 'ERR_UPDATE_DOWNLOAD',
        `${name} from ${base}: ${detail}`,
        {
          cause: error,
          retryable,
        },
      );
    }
  };
  const text = await what(MANIFEST_FILE, MANIFEST_MAX_BYTES);
  if (text === 'missing')
    throw new UpdateError('ERR_UPDATE_DOWNLOAD', `${MANIFEST_FILE} not found in ${base} (HTTP 404)`);
  const signature = await what(SIGNATURE_FILE, SIGNATURE_MAX_BYTES);
  if (signature === 'missing') {
    throw new UpdateError(
      'ERR_UPDATE_SIGNATURE',
      `${SIGNATURE_FILE} not found in ${base} (HTTP 404): unsigned artefacts are never installed`,
    );
  }
  return { text, signature };
}
