import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';

/** A scratch directory removed when the test ends. */
export function scratchDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'multihead-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function writeJson(dir: string, name: string, data: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof data === 'string' ? data : JSON.stringify(data));
  return path;
}

/**
 * A real tmpfs of `size` (e.g. '16m') mounted in a scratch directory, unmounted at teardown
 * (lazily with `lazy`: a killed process may still hold files there). Needs root (CI runs as
 * root); without it the test fails, it does not skip.
 */
export function tmpfsMount(t: ExecutionContext, size: string, options: { lazy?: boolean } = {}): string {
  const mount = scratchDir(t);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mount], { stdio: 'pipe' });
  } catch (error) {
    throw new Error(
      `cannot mount a ${size} tmpfs on ${mount} (this test needs root): ${(error as { stderr?: Buffer }).stderr ?? error}`,
    );
  }
  t.teardown(() => execFileSync('umount', options.lazy ? ['-l', mount] : [mount]));
  return mount;
}

/** Bytes an unprivileged writer may still use on the filesystem holding `path`. */
export function freeBytes(path: string): number {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
}
