import {
  type Assignment,
  assignmentKey,
  assignmentOutputs,
  type Content,
  type Crop,
  DAYS,
  type Schedule,
  type ScheduleWindow,
  secondsOfDay,
} from './model.ts';
import { DAY_MS, dateOf, instantOf, localDay, midnightOf, weekday } from './timezone.ts';

/**
 * What plays where, as a pure function of time and content: no clock, no I/O, so it can be
 * tested at any instant (DST nights, leap days) and re-run freely.
 */

export type PlacementSource = 'window' | 'default' | 'fixed' | 'none';

export interface Placement {
  /** The playlist to play, or null: nothing is scheduled and the output shows a slate. */
  readonly playlist: string | null;
  readonly source: PlacementSource;
  /** Why, in words (shown on slates and in content.status). */
  readonly reason: string;
  /** The assignment this output belongs to: its output name or "group:<id>". */
  readonly assignment: string;
  readonly schedule?: string;
  /** The window's id, or "#<index>" when it has none. */
  readonly window?: string;
  /** For a video-wall tile: the part of the picture this output shows. */
  readonly crop?: Crop;
  /** "off": a display-off window; the displays sleep (playlist is null). */
  readonly display?: 'off';
}

export interface ScheduleResult {
  readonly at: number;
  /** Every output the content assigns, by name. */
  readonly perOutput: Readonly<Record<string, Placement>>;
  /** The next instant any output's playlist or window changes; null when none within the horizon. */
  readonly nextChangeAt: number | null;
  /** What plays from nextChangeAt on (for preroll and for keeping the media cached). */
  readonly next: Readonly<Record<string, Placement>> | null;
}

/** How far ahead the next change is searched; beyond it the caller re-evaluates later. */
export const HORIZON_DAYS = 370;

interface Occurrence {
  readonly start: number;
  readonly end: number;
  readonly index: number;
  readonly window: ScheduleWindow;
}

interface ScheduleState {
  readonly playlist: string | null;
  readonly source: 'window' | 'default' | 'none';
  readonly window?: string;
  readonly display?: 'off';
  readonly reason: string;
}

const windowName = (window: ScheduleWindow, index: number): string => window.id ?? `#${index}`;

/** One schedule's windows unrolled onto calendar days, memoised for one call. */
class ScheduleClock {
  readonly schedule: Schedule;
  readonly #days = new Map<number, Occurrence[]>();

  constructor(schedule: Schedule) {
    this.schedule = schedule;
  }

  /** Occurrences of windows that START on local day `day` (an occurrence may run into the next). */
  occurrences(day: number): Occurrence[] {
    let list = this.#days.get(day);
    if (list) return list;
    list = [];
    const zone = this.schedule.timezone;
    const dayName = DAYS[weekday(day)];
    const date = dateOf(day);
    for (const [index, window] of this.schedule.windows.entries()) {
      if (window.days && !window.days.includes(dayName as never)) continue;
      if (window.from !== undefined && date < window.from) continue;
      if (window.until !== undefined && date > window.until) continue;
      const startSec = secondsOfDay(window.start);
      const endSec = secondsOfDay(window.end);
      const start = instantOf(day * DAY_MS + startSec * 1000, zone);
      const endDay = endSec > startSec ? day : day + 1;
      const end = instantOf(endDay * DAY_MS + endSec * 1000, zone);
      // A window inside a skipped hour collapses to nothing that night (see docs/content.md).
      if (end > start) list.push({ start, end, index, window });
    }
    this.#days.set(day, list);
    return list;
  }

  stateAt(t: number): ScheduleState {
    const today = localDay(t, this.schedule.timezone);
    let best: Occurrence | undefined;
    for (const day of [today - 1, today]) {
      for (const o of this.occurrences(day)) {
        if (o.start > t || t >= o.end) continue;
        if (!best || better(o, best)) best = o;
      }
    }
    const id = this.schedule.id;
    if (best) {
      const w = best.window;
      const name = windowName(w, best.index);
      const when = `(${w.start}-${w.end} ${this.schedule.timezone}, priority ${w.priority ?? 0})`;
      if (w.display === 'off') {
        return {
          playlist: null,
          source: 'window',
          window: name,
          display: 'off',
          reason: `display off: window ${name} of schedule ${id} ${when}`,
        };
      }
      return {
        playlist: w.playlist ?? null,
        source: 'window',
        window: name,
        reason: `window ${name} of schedule ${id} ${when}`,
      };
    }
    if (this.schedule.default !== undefined) {
      return {
        playlist: this.schedule.default,
        source: 'default',
        reason: `no window of schedule ${id} is active: its default playlist`,
      };
    }
    return {
      playlist: null,
      source: 'none',
      reason: `no window of schedule ${id} is active and it has no default playlist`,
    };
  }

  /** The first instant after t at which stateAt gives another playlist or window. */
  nextChange(t: number): number | null {
    const zone = this.schedule.timezone;
    const current = this.stateAt(t);
    const today = localDay(t, zone);
    const pending: number[] = [];
    for (let day = today - 1; day <= today + HORIZON_DAYS; day++) {
      for (const o of this.occurrences(day)) {
        if (o.start > t) pending.push(o.start);
        if (o.end > t) pending.push(o.end);
      }
      // Every occurrence of a later day starts at or after the next midnight, so boundaries
      // before it are final and can be checked in order.
      const settled = midnightOf(day + 1, zone);
      pending.sort((a, b) => a - b);
      while (pending.length > 0 && (pending[0] as number) <= settled) {
        const at = pending.shift() as number;
        const state = this.stateAt(at);
        if (state.playlist !== current.playlist || state.window !== current.window) return at;
        while (pending[0] === at) pending.shift();
      }
    }
    return null;
  }
}

/** Priority first; on a tie the window listed first wins, so the choice never flickers. */
function better(a: Occurrence, b: Occurrence): boolean {
  const pa = a.window.priority ?? 0;
  const pb = b.window.priority ?? 0;
  return pa !== pb ? pa > pb : a.index < b.index;
}

function placements(
  content: Content,
  clocks: ReadonlyMap<string, ScheduleClock>,
  t: number,
): Record<string, Placement> {
  const result: Record<string, Placement> = {};
  for (const assignment of content.outputs) {
    const base = placementOf(assignment, clocks, t);
    for (const output of assignmentOutputs(assignment)) {
      const crop = assignment.tiles?.find((tile) => tile.output === output)?.crop;
      result[output] = crop ? { ...base, crop } : base;
    }
  }
  return result;
}

function placementOf(assignment: Assignment, clocks: ReadonlyMap<string, ScheduleClock>, t: number): Placement {
  const key = assignmentKey(assignment);
  if (assignment.playlist !== undefined) {
    return { playlist: assignment.playlist, source: 'fixed', reason: `fixed playlist for ${key}`, assignment: key };
  }
  const clock = assignment.schedule === undefined ? undefined : clocks.get(assignment.schedule);
  if (!clock) {
    return { playlist: null, source: 'none', reason: `${key} has no schedule`, assignment: key };
  }
  const state = clock.stateAt(t);
  return {
    playlist: state.playlist,
    source: state.source,
    reason: state.reason,
    assignment: key,
    schedule: clock.schedule.id,
    ...(state.window !== undefined ? { window: state.window } : {}),
    ...(state.display ? { display: state.display } : {}),
  };
}

/**
 * What each output plays at `now`, why, and when that next changes. `content` must be
 * validated (contentValidate): ids are trusted here.
 */
export function scheduleAt(now: Date | number, content: Content): ScheduleResult {
  const t = typeof now === 'number' ? now : now.getTime();
  const clocks = new Map<string, ScheduleClock>();
  const used = new Set(content.outputs.map((a) => a.schedule).filter((s): s is string => s !== undefined));
  for (const schedule of content.schedules ?? []) {
    if (used.has(schedule.id)) clocks.set(schedule.id, new ScheduleClock(schedule));
  }
  let nextChangeAt: number | null = null;
  for (const clock of clocks.values()) {
    const at = clock.nextChange(t);
    if (at !== null && (nextChangeAt === null || at < nextChangeAt)) nextChangeAt = at;
  }
  return {
    at: t,
    perOutput: placements(content, clocks, t),
    nextChangeAt,
    next: nextChangeAt === null ? null : placements(content, clocks, nextChangeAt),
  };
}
