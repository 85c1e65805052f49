import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { UpdateError, type UpdateErrorCode } from '../src/update/errors.ts';
import { manifestFetch } from '../src/update/manifest.ts';
import { signatureVerify } from '../src/update/signature.ts';
import { mediaServerStart } from './helpers/media-server.ts';
import { scratchDir } from './helpers/tmp.ts';
import { artefactsMake, artefactsServe, signingKeyMake } from './helpers/update-artefacts.ts';

/** SHA256SUMS and a signature written where gpgv reads them. */
function files(
  t: ExecutionContext,
  sums: Buffer,
  signature: Buffer,
): { file: string; signature: string; homedir: string } {
  const dir = scratchDir(t);
  writeFileSync(join(dir, 'SHA256SUMS'), sums);
  writeFileSync(join(dir, 'SHA256SUMS.gpg'), signature);
  return { file: join(dir, 'SHA256SUMS'), signature: join(dir, 'SHA256SUMS.gpg'), homedir: dir };
}

async function refused(
  t: ExecutionContext,
  work: Promise<unknown>,
  code: UpdateErrorCode,
  message: RegExp,
): Promise<void> {
  const error = await t.throwsAsync(work, { instanceOf: UpdateError });
  t.is(error?.code, code);
  t.regex(error?.message ?? '', message);
}

// One key pair for the file: gpg's key generation is the slow part (two busy cores).
test.serial('signature: a digest list signed by a key in the keyring is accepted by gpgv', async (t) => {
  const key = signingKeyMake(t);
  const a = artefactsMake(key, '0.2.0');
  const sums = a.files.get('SHA256SUMS') as Buffer;
  await t.notThrowsAsync(
    signatureVerify({ keyring: key.keyring, ...files(t, sums, a.files.get('SHA256SUMS.gpg') as Buffer) }),
  );
});

test.serial(
  'signature: another key, a changed SHA256SUMS, a garbage or missing signature are ERR_UPDATE_SIGNATURE',
  async (t) => {
    const key = signingKeyMake(t);
    const stranger = signingKeyMake(t, 'someone else');
    const a = artefactsMake(key, '0.2.0');
    const sums = a.files.get('SHA256SUMS') as Buffer;
    const sig = a.files.get('SHA256SUMS.gpg') as Buffer;
    // Signed by a key the box does not trust.
    await refused(
      t,
      signatureVerify({ keyring: key.keyring, ...files(t, sums, stranger.sign(sums)) }),
      'ERR_UPDATE_SIGNATURE',
      /signed by key [0-9A-F]+, which is not in the update keyring/,
    );
    // The list changed after signing: one digest swapped for another file's.
    const tampered = Buffer.from(sums.toString().replace(/^[0-9a-f]{64}/, 'f'.repeat(64)));
    await refused(
      t,
      signatureVerify({ keyring: key.keyring, ...files(t, tampered, sig) }),
      'ERR_UPDATE_SIGNATURE',
      /does not match its signature/,
    );
    await refused(
      t,
      signatureVerify({ keyring: key.keyring, ...files(t, sums, Buffer.from('not a signature\n')) }),
      'ERR_UPDATE_SIGNATURE',
      /SHA256SUMS.gpg: /,
    );
    await refused(
      t,
      signatureVerify({ keyring: join(scratchDir(t), 'none.pgp'), ...files(t, sums, sig) }),
      'ERR_UPDATE_SIGNATURE',
      /update keyring .*none.pgp is not readable \(ENOENT\)/,
    );
    // A directory without SHA256SUMS.gpg is refused before anything else is fetched.
    const server = await mediaServerStart();
    t.teardown(() => server.close());
    const url = artefactsServe(server, 'unsigned', a, {}, ['SHA256SUMS.gpg']);
    await refused(
      t,
      manifestFetch(url, { fetch: globalThis.fetch, timeoutMs: 5000 }),
      'ERR_UPDATE_SIGNATURE',
      /SHA256SUMS.gpg not found .*unsigned artefacts are never installed/,
    );
    t.false(server.requests.some((r) => r.path.endsWith('.squashfs') || r.path.endsWith('.efi')));
  },
);
