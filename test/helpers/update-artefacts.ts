import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Fault, MediaServer } from './media-server.ts';
import { scratchDir } from './tmp.ts';

/** A throw-away OpenPGP signing key in its own GNUPGHOME, and its public keyring as the box would bake it. */
export interface SigningKey {
  readonly home: string;
  /** `gpg --export` of the public key: what `update.keyring` points at. */
  readonly keyring: string;
  sign(data: Buffer): Buffer;
}

/**
 * Makes an ed25519 key with the real gpg (no passphrase, never expires) in a scratch GNUPGHOME.
 * A missing gpg throws: the test fails, it does not skip. The gpg-agent it starts is stopped at
 * teardown.
 */
export function signingKeyMake(t: ExecutionContext, name = 'multihead test'): SigningKey {
  const home = join(scratchDir(t), 'gnupg');
  mkdirSync(home, { mode: 0o700 });
  const gpg = (args: string[], input?: Buffer): Buffer =>
    execFileSync('gpg', ['--homedir', home, '--batch', '--quiet', '--pinentry-mode', 'loopback', ...args], {
      ...(input ? { input } : {}),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  t.teardown(() => {
    try {
      execFileSync('gpgconf', ['--homedir', home, '--kill', 'gpg-agent'], { stdio: 'ignore' });
    } catch {
      // No agent left to stop.
    }
  });
  gpg(['--passphrase', '', '--quick-gen-key', `${name} <update-test@invalid>`, 'ed25519', 'sign', 'never']);
  const keyring = join(home, '..', 'update-keyring.pgp');
  writeFileSync(keyring, gpg(['--export']));
  return { home, keyring, sign: (data) => gpg(['--detach-sign', '--output', '-'], data) };
}

export interface Artefacts {
  readonly version: string;
  /** File name → bytes: the root image, the UKI, SHA256SUMS and SHA256SUMS.gpg. */
  readonly files: Map<string, Buffer>;
  readonly root: string;
  readonly uki: string;
}

export const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/**
 * An artefact directory as `npm run image` writes it, with random bytes for the images: the
 * digest list (sha256sum format) signed by `key`. `sums` replaces the digest list's text.
 */
export function artefactsMake(
  key: SigningKey,
  version: string,
  options: { rootBytes?: number; ukiBytes?: number; sums?: (text: string) => string } = {},
): Artefacts {
  const root = `multihead_${version}.root.squashfs`;
  const uki = `multihead_${version}.efi`;
  const rootData = randomBytes(options.rootBytes ?? 96 * 1024);
  const ukiData = randomBytes(options.ukiBytes ?? 32 * 1024);
  let sums = `${sha256(rootData)}  ${root}\n${sha256(ukiData)}  ${uki}\n`;
  if (options.sums) sums = options.sums(sums);
  const sumsData = Buffer.from(sums);
  const files = new Map<string, Buffer>([
    [root, rootData],
    [uki, ukiData],
    ['SHA256SUMS', sumsData],
    ['SHA256SUMS.gpg', key.sign(sumsData)],
  ]);
  return { version, files, root, uki };
}

/** Serves the artefacts under `/<dir>/` with the test media server; returns the directory URL. */
export function artefactsServe(
  server: MediaServer,
  dir: string,
  artefacts: Artefacts,
  faults: Record<string, Fault[]> = {},
  skip: readonly string[] = [],
): string {
  for (const [name, data] of artefacts.files) {
    if (!skip.includes(name)) server.add(`/${dir}/${name}`, data, faults[name] ?? []);
  }
  return server.url(`/${dir}/`);
}
