/**
 * Firmware versions: dotted numbers (0.2.0, 2026.12.1), compared number by number, so 0.10.0 is
 * newer than 0.9.0 and 1.0 equals 1.0.0. The same rule systemd-sysupdate applies to the @v in
 * its patterns for versions of this shape, so the supervisor and the installer agree on "newer".
 */

/** At most 8 components of at most 9 digits: long enough for dates, short enough to stay numbers. */
const VERSION = /^\d{1,9}(\.\d{1,9}){0,7}$/;

export function versionValid(version: string): boolean {
  return VERSION.test(version);
}

/** Negative when a is older than b, 0 when equal, positive when newer. Both must be valid. */
export function versionCompare(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}
