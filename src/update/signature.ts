import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { UpdateError } from './errors.ts';

/** The image bakes the fleet's public key(s) here (`update.keyring`). */
export const KEYRING_DEFAULT = '/usr/lib/multihead/update-keyring.pgp';

export interface SignatureCheck {
  /** An OpenPGP keyring of trusted public keys (`gpg --export` output). */
  readonly keyring: string;
  /** The signed file and its detached signature. */
  readonly file: string;
  readonly signature: string;
  /** An empty or missing directory for gpgv's home, so nothing of the user's GnuPG is read. */
  readonly homedir: string;
  /** gpgv's path (tests may point it elsewhere); `gpgv` on PATH by default. */
  readonly gpgv?: string;
  readonly timeoutMs?: number;
}

/** The lines of gpgv's machine-readable status (`--status-fd 1`) that say what it decided. */
function statusOf(stdout: string): Map<string, string> {
  const status = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const m = /^\[GNUPG:\] ([A-Z_]+) ?(.*)$/.exec(line);
    if (m) status.set(m[1] as string, m[2] as string);
  }
  return status;
}

/**
 * Checks a detached OpenPGP signature with `gpgv --keyring <keyring>` (what systemd-sysupdate
 * itself runs on SHA256SUMS): run with execFile, no shell, so no byte of a path is interpreted.
 * gpgv trusts exactly the keys in the keyring, and nothing else on the box. Resolves when the
 * signature is good; throws ERR_UPDATE_SIGNATURE saying why not (tampered, unknown key,
 * unreadable signature, no keyring), ERR_UPDATE_UNSUPPORTED when the box has no gpgv.
 */
export async function signatureVerify(check: SignatureCheck): Promise<void> {
  try {
    await access(check.keyring);
  } catch (error) {
    throw new UpdateError(
      'ERR_UPDATE_SIGNATURE',
      `cannot verify SHA256SUMS: the update keyring ${check.keyring} is not readable (${(error as NodeJS.ErrnoException).code}); the image bakes it (update.keyring)`,
    );
  }
  const args = [
    '--homedir',
    join(check.homedir, 'gnupg-unused'),
    '--status-fd',
    '1',
    '--keyring',
    check.keyring,
    '--',
    check.signature,
    check.file,
  ];
  const { code, stdout, stderr } = await new Promise<{ code: number | string; stdout: string; stderr: string }>(
    (resolve) => {
      execFile(
        check.gpgv ?? 'gpgv',
        args,
        { timeout: check.timeoutMs ?? 30_000, maxBuffer: 256 * 1024 },
        (error, out, err) => {
          const c = (error as (Error & { code?: number | string }) | null)?.code;
          resolve({ code: error ? (c ?? 'failed') : 0, stdout: String(out), stderr: String(err) });
        },
      );
    },
  );
  if (code === 'ENOENT') {
    throw new UpdateError('ERR_UPDATE_UNSUPPORTED', 'gpgv is not installed: this box cannot verify updates');
  }
  const status = statusOf(stdout);
  if (code === 0 && status.has('GOODSIG') && status.has('VALIDSIG') && !status.has('BADSIG')) return;
  let why: string;
  if (status.has('BADSIG')) why = 'SHA256SUMS does not match its signature (changed after signing, or corrupt)';
  else if (status.has('NO_PUBKEY')) {
    why = `it is signed by key ${status.get('NO_PUBKEY')}, which is not in the update keyring ${check.keyring}`;
  } else if (status.has('EXPKEYSIG') || status.has('REVKEYSIG')) why = 'the signing key is expired or revoked';
  else if (status.has('ERRSIG')) why = 'the signature could not be checked';
  else if (status.has('NODATA')) why = 'SHA256SUMS.gpg holds no OpenPGP signature';
  else why = `gpgv failed (${code}): ${stderr.trim().split('\n').at(-1) ?? ''}`;
  throw new UpdateError('ERR_UPDATE_SIGNATURE', `SHA256SUMS.gpg: ${why}`);
}
