import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileWriteAtomic } from '../fs/atomic.ts';

export const SESSION_FILE = 'mqtt-session.json';

/**
 * The number carried by each birth (`state` online) and its last will. It grows with every
 * connection over the device's life, so a consumer can tell a late `offline` from an earlier
 * connection (smaller number) from the death of the current one (Sparkplug's bdSeq idea).
 * Persisted before the connection is attempted: a crash cannot reuse a number.
 */
export function sessionNext(dataDir: string): number {
  const path = join(dataDir, SESSION_FILE);
  let previous = 0;
  try {
    const stored = JSON.parse(readFileSync(path, 'utf8')) as { session?: unknown };
    if (typeof stored.session === 'number' && Number.isSafeInteger(stored.session) && stored.session > 0) {
      previous = stored.session;
    }
  } catch {
    // Missing on first boot; unreadable or corrupt restarts the count, which consumers see as
    // a smaller number once: acceptable for a file that fsync-and-rename keeps whole.
  }
  const next = previous + 1;
  fileWriteAtomic(path, `${JSON.stringify({ session: next })}\n`);
  return next;
}
