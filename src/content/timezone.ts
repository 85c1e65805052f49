/**
 * Wall-clock time in an IANA zone, from Node's own ICU data through Intl.DateTimeFormat (no tz
 * library). "Wall" values are local date and time written as if they were UTC milliseconds,
 * which makes calendar arithmetic plain integer arithmetic.
 */

const DAY_MS = 86_400_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      era: 'short',
    });
    formatters.set(zone, f);
  }
  return f;
}

/** The local wall time of an instant, as UTC-style milliseconds (whole seconds). */
export function wallOf(instant: number, zone: string): number {
  const fields: Record<string, number> = {};
  let bc = false;
  for (const part of formatter(zone).formatToParts(new Date(instant))) {
    if (part.type === 'era') bc = part.value === 'BC';
    else if (part.type !== 'literal') fields[part.type] = Number(part.value);
  }
  const year = bc ? 1 - (fields.year ?? 0) : (fields.year ?? 0);
  const wall = Date.UTC(year, (fields.month ?? 1) - 1, fields.day ?? 1, fields.hour ?? 0, fields.minute ?? 0);
  return wall + (fields.second ?? 0) * 1000;
}

/** Milliseconds the zone is ahead of UTC at an instant (sub-second part ignored). */
export function offsetAt(instant: number, zone: string): number {
  const whole = Math.floor(instant / 1000) * 1000;
  return wallOf(whole, zone) - whole;
}

/**
 * The instant a local wall time happens. Two DST rules, chosen so a window never starts
 * twice and never vanishes silently:
 * - a repeated wall time (clocks go back) maps to its FIRST occurrence;
 * - a skipped wall time (clocks go forward) maps to the first valid instant after it, which
 *   is the moment of the transition (02:30 on a spring-forward night starts at 03:00).
 */
export function instantOf(wall: number, zone: string): number {
  // Real zones change offset at most once within two days, so the offsets a day either side
  // are the only candidates.
  const before = offsetAt(wall - DAY_MS, zone);
  const after = offsetAt(wall + DAY_MS, zone);
  const candidates = [...new Set([wall - before, wall - after])].sort((a, b) => a - b);
  for (const candidate of candidates) {
    if (wallOf(candidate, zone) === wall) return candidate;
  }
  // A gap: find the transition between the two candidates by bisection on whole seconds.
  let lo = Math.min(wall - before, wall - after);
  let hi = Math.max(wall - before, wall - after);
  const late = offsetAt(hi, zone);
  while (hi - lo > 1000) {
    const mid = Math.floor((lo + hi) / 2000) * 1000;
    if (offsetAt(mid, zone) === late) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Days since 1970-01-01 of the local date an instant falls on. */
export function localDay(instant: number, zone: string): number {
  return Math.floor(wallOf(instant, zone) / DAY_MS);
}

/** 0 = Sunday ... 6 = Saturday, for a day number. */
export function weekday(day: number): number {
  return (((day + 4) % 7) + 7) % 7;
}

/** YYYY-MM-DD for a day number. */
export function dateOf(day: number): string {
  return new Date(day * DAY_MS).toISOString().slice(0, 10);
}

/** The instant of local midnight starting a day (with the DST rules of `instantOf`). */
export function midnightOf(day: number, zone: string): number {
  return instantOf(day * DAY_MS, zone);
}

export { DAY_MS };
