import { Ajv, type ErrorObject } from 'ajv';
import type { Layout, Rotation } from '../display/layout.ts';
import { ERR_SOURCE_NOT_ALLOWED, urlProblem, WEB_SCHEMES } from '../playback/source-policy.ts';
import contentSchema from './content.schema.json' with { type: 'json' };

/**
 * The content model: what a device plays, where and when. The JSON Schema beside this file
 * checks shapes; `contentValidate` adds what a schema cannot say (ids that must exist, time
 * zones, calendar dates) so every problem comes back with its JSON path.
 */

export type MediaType = 'video' | 'image';
export type Day = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun';
export const DAYS: readonly Day[] = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

export interface MediaItem {
  readonly id: string;
  readonly url: string;
  readonly sha256: string;
  readonly size: number;
  readonly type: MediaType;
  /** Seconds an image shows for, unless the playlist item says otherwise. */
  readonly duration?: number;
}

export interface PlaylistItem {
  readonly media: string;
  /** Seconds; absent: a video plays to its end, an image for its media duration. */
  readonly duration?: number;
}

export interface Playlist {
  readonly id: string;
  readonly items: readonly PlaylistItem[];
  /** Default true: start again after the last item. False holds the last frame. */
  readonly loop?: boolean;
  readonly transition?: 'gapless';
}

export interface ScheduleWindow {
  readonly id?: string;
  /** What plays during the window; absent for a display-off window. */
  readonly playlist?: string;
  /** "off": the displays sleep during the window (DPMS), instead of a playlist. */
  readonly display?: 'off';
  /** Days the window starts on; all days when absent. */
  readonly days?: readonly Day[];
  /** Local wall time HH:MM[:SS]. */
  readonly start: string;
  /** Local wall time; at or before `start` means the window runs past midnight. */
  readonly end: string;
  /** Inclusive local dates YYYY-MM-DD bounding the days the window starts on. */
  readonly from?: string;
  readonly until?: string;
  /** Higher wins when windows overlap; then the earlier window in the list. */
  readonly priority?: number;
}

export interface Schedule {
  readonly id: string;
  readonly timezone: string;
  /** Plays when no window is active. */
  readonly default?: string;
  readonly windows: readonly ScheduleWindow[];
}

/** Fractions of the video's width and height: one tile of a video wall. */
export interface Crop {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

export interface Tile {
  readonly output: string;
  readonly crop: Crop;
}

/** One output, or a group of outputs fed by one decoder; with a schedule or a fixed playlist. */
export interface Assignment {
  readonly output?: string;
  readonly group?: string;
  readonly tiles?: readonly Tile[];
  readonly schedule?: string;
  readonly playlist?: string;
  /** How the picture is sized to each output; default `fit` for one output, `stretch` for a wall's tiles. */
  readonly layout?: Layout;
  /** Degrees the picture is turned clockwise on the screen (portrait mounting). */
  readonly rotation?: Rotation;
}

export interface Content {
  readonly version: number;
  readonly media: readonly MediaItem[];
  readonly playlists: readonly Playlist[];
  readonly schedules?: readonly Schedule[];
  readonly outputs: readonly Assignment[];
}

export interface ContentProblem {
  /** JSON path such as $.playlists[0].items[2].media */
  readonly path: string;
  readonly message: string;
}

/** Invalid content. `problems` lists every one found; the message names the first few. */
export class ContentError extends Error {
  readonly code = 'ERR_CONTENT_INVALID';
  readonly problems: readonly ContentProblem[];

  constructor(problems: readonly ContentProblem[], source?: string) {
    const shown = problems.slice(0, 5).map((p) => `${p.path}: ${p.message}`);
    const more = problems.length > 5 ? `; and ${problems.length - 5} more` : '';
    super(`ERR_CONTENT_INVALID: ${source ? `${source}: ` : ''}${shown.join('; ')}${more}`);
    this.name = 'ContentError';
    this.problems = problems;
  }
}

const ajv = new Ajv({ allErrors: true, verbose: true, strict: true });
const schemaCheck = ajv.compile(contentSchema);

/** Parses JSON text and validates it; a syntax error is reported like any other problem. */
export function contentParse(text: string, source?: string): Content {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ContentError([{ path: '$', message: `not valid JSON: ${(error as Error).message}` }], source);
  }
  return contentValidate(value, source);
}

/** Returns the value typed as Content, or throws ContentError naming every problem. */
export function contentValidate(value: unknown, source?: string): Content {
  if (!schemaCheck(value)) {
    throw new ContentError(dedupe((schemaCheck.errors ?? []).map(schemaProblem)), source);
  }
  const content = value as unknown as Content;
  const problems = crossCheck(content);
  if (problems.length > 0) throw new ContentError(problems, source);
  return content;
}

function jsonPath(instancePath: string): string {
  let path = '$';
  for (const raw of instancePath.split('/').slice(1)) {
    const part = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    path += /^\d+$/.test(part) ? `[${part}]` : `.${part}`;
  }
  return path;
}

function schemaProblem(e: ErrorObject): ContentProblem {
  const path = jsonPath(e.instancePath);
  const rule = (e.parentSchema as { description?: string } | undefined)?.description;
  const got = JSON.stringify(e.data);
  const shown = got === undefined ? String(e.data) : got.length > 60 ? `${got.slice(0, 57)}...` : got;
  switch (e.keyword) {
    case 'required':
      return { path, message: `missing "${(e.params as { missingProperty: string }).missingProperty}"` };
    case 'additionalProperties':
      return { path, message: `unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"` };
    case 'type':
      return { path, message: `${shown} must be ${rule ?? `of type ${(e.params as { type: string }).type}`}` };
    case 'enum':
      return {
        path,
        message: `${shown} must be ${rule ?? `one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`}`,
      };
    default:
      return { path, message: `${shown} must be ${rule ?? e.message ?? 'valid'}` };
  }
}

function dedupe(problems: ContentProblem[]): ContentProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.path}\0${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** True when `zone` is an IANA time zone this Node.js (its ICU data) knows. */
export function timezoneKnown(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** "2024-02-29" → true; "2023-02-29" → false (no such day). */
export function dateValid(date: string): boolean {
  const [y, m, d] = date.split('-').map(Number) as [number, number, number];
  const t = new Date(Date.UTC(y, m - 1, d));
  return t.getUTCFullYear() === y && t.getUTCMonth() === m - 1 && t.getUTCDate() === d;
}

/** Seconds after local midnight for HH:MM[:SS]; 24:00 is 86400. */
export function secondsOfDay(time: string): number {
  const [h, m, s] = time.split(':').map(Number);
  return (h ?? 0) * 3600 + (m ?? 0) * 60 + (s ?? 0);
}

function known(ids: Iterable<string>): string {
  const list = [...ids];
  if (list.length === 0) return 'none defined';
  const shown = list.slice(0, 8).join(', ');
  return `known: ${shown}${list.length > 8 ? ', ...' : ''}`;
}

function uniqueIds(
  items: readonly { id?: string | undefined }[],
  base: string,
  what: string,
  problems: ContentProblem[],
): Map<string, number> {
  const ids = new Map<string, number>();
  for (const [i, item] of items.entries()) {
    if (item.id === undefined) continue;
    const first = ids.get(item.id);
    if (first !== undefined) {
      problems.push({
        path: `${base}[${i}].id`,
        message: `${what} id "${item.id}" is used twice (first at ${base}[${first}])`,
      });
    } else ids.set(item.id, i);
  }
  return ids;
}

function crossCheck(content: Content): ContentProblem[] {
  const problems: ContentProblem[] = [];
  const media = uniqueIds(content.media, '$.media', 'media', problems);
  const playlists = uniqueIds(content.playlists, '$.playlists', 'playlist', problems);
  const schedules = uniqueIds(content.schedules ?? [], '$.schedules', 'schedule', problems);

  const bySha = new Map<string, MediaItem>();
  for (const [i, m] of content.media.entries()) {
    // The schema's pattern is the first line; the source policy is the one rule for every URL.
    const problem = urlProblem(m.url, WEB_SCHEMES);
    if (problem !== undefined) {
      problems.push({
        path: `$.media[${i}].url`,
        message: `${ERR_SOURCE_NOT_ALLOWED}: the media URL ${problem}${problem.includes('allowed:') ? '' : '; allowed: http:// and https:// URLs'}`,
      });
    }
    const other = bySha.get(m.sha256);
    if (other && other.size !== m.size) {
      problems.push({
        path: `$.media[${i}].size`,
        message: `media "${m.id}" has the sha256 of "${other.id}" but size ${m.size}, not ${other.size}`,
      });
    }
    bySha.set(m.sha256, m);
  }

  for (const [p, playlist] of content.playlists.entries()) {
    for (const [i, item] of playlist.items.entries()) {
      const path = `$.playlists[${p}].items[${i}]`;
      const index = media.get(item.media);
      if (index === undefined) {
        problems.push({
          path: `${path}.media`,
          message: `unknown media id "${item.media}" (${known(media.keys())})`,
        });
        continue;
      }
      const m = content.media[index];
      if (m?.type === 'image' && item.duration === undefined && m.duration === undefined) {
        problems.push({
          path,
          message: `image "${m.id}" has no duration: give the item a "duration" or the media a "duration" (seconds)`,
        });
      }
    }
  }

  const playlistRef = (path: string, id: string | undefined): void => {
    if (id !== undefined && !playlists.has(id)) {
      problems.push({ path, message: `unknown playlist id "${id}" (${known(playlists.keys())})` });
    }
  };

  for (const [s, schedule] of (content.schedules ?? []).entries()) {
    const base = `$.schedules[${s}]`;
    if (!timezoneKnown(schedule.timezone)) {
      problems.push({
        path: `${base}.timezone`,
        message: `"${schedule.timezone}" is not an IANA time zone this device knows (e.g. Europe/Berlin, UTC)`,
      });
    }
    playlistRef(`${base}.default`, schedule.default);
    uniqueIds(schedule.windows, `${base}.windows`, 'window', problems);
    for (const [w, window] of schedule.windows.entries()) {
      const path = `${base}.windows[${w}]`;
      playlistRef(`${path}.playlist`, window.playlist);
      if ((window.playlist === undefined) === (window.display === undefined)) {
        problems.push({ path, message: 'give either "playlist" or "display": "off", not both or neither' });
      }
      if (secondsOfDay(window.start) === 86400) {
        problems.push({ path: `${path}.start`, message: '"24:00" can only be an end; start at "00:00"' });
      }
      if (secondsOfDay(window.start) === secondsOfDay(window.end)) {
        problems.push({
          path: `${path}.end`,
          message: `the window starts and ends at ${window.start}: it would be empty (for a whole day use 00:00 to 24:00)`,
        });
      }
      for (const key of ['from', 'until'] as const) {
        const date = window[key];
        if (date !== undefined && !dateValid(date)) {
          problems.push({ path: `${path}.${key}`, message: `"${date}" is not a calendar date` });
        }
      }
      if (window.from && window.until && window.from > window.until) {
        problems.push({ path: `${path}.until`, message: `"${window.until}" is before "from" (${window.from})` });
      }
    }
  }

  const outputSeen = new Map<string, string>();
  const groupSeen = new Set<string>();
  for (const [a, assignment] of content.outputs.entries()) {
    const path = `$.outputs[${a}]`;
    const single = assignment.output !== undefined;
    const group = assignment.group !== undefined || assignment.tiles !== undefined;
    if (single === group) {
      problems.push({
        path,
        message: 'give either "output" (one output) or "group" with "tiles" (a video wall), not both or neither',
      });
    } else if (group && (assignment.group === undefined || assignment.tiles === undefined)) {
      problems.push({ path, message: 'a group needs both "group" (its id) and "tiles"' });
    }
    if ((assignment.schedule === undefined) === (assignment.playlist === undefined)) {
      problems.push({ path, message: 'give either "schedule" or "playlist" (a fixed playlist), not both or neither' });
    }
    if (assignment.schedule !== undefined && !schedules.has(assignment.schedule)) {
      problems.push({
        path: `${path}.schedule`,
        message: `unknown schedule id "${assignment.schedule}" (${known(schedules.keys())})`,
      });
    }
    playlistRef(`${path}.playlist`, assignment.playlist);
    if (assignment.group !== undefined) {
      if (groupSeen.has(assignment.group)) {
        problems.push({ path: `${path}.group`, message: `group "${assignment.group}" is defined twice` });
      }
      groupSeen.add(assignment.group);
    }
    const names: Array<[string, string]> = [];
    if (assignment.output !== undefined) names.push([assignment.output, `${path}.output`]);
    for (const [t, tile] of (assignment.tiles ?? []).entries()) {
      names.push([tile.output, `${path}.tiles[${t}].output`]);
      const { x, y, width, height } = tile.crop;
      if (x + width > 1 + 1e-9 || y + height > 1 + 1e-9) {
        problems.push({
          path: `${path}.tiles[${t}].crop`,
          message: `the rectangle reaches past the video (x + width = ${x + width}, y + height = ${y + height}; at most 1)`,
        });
      }
    }
    for (const [name, at] of names) {
      const first = outputSeen.get(name);
      if (first !== undefined) {
        problems.push({ path: at, message: `output ${name} is already assigned at ${first}` });
      } else outputSeen.set(name, at);
    }
  }
  return problems;
}

/** Looks up a media item by id (content is validated, so referenced ids exist). */
export function mediaById(content: Content): Map<string, MediaItem> {
  return new Map(content.media.map((m) => [m.id, m]));
}

/** The outputs an assignment drives. */
export function assignmentOutputs(assignment: Assignment): string[] {
  return assignment.output !== undefined ? [assignment.output] : (assignment.tiles ?? []).map((t) => t.output);
}

/** A stable name for an assignment: its output, or "group:<id>". */
export function assignmentKey(assignment: Assignment): string {
  return assignment.output ?? `group:${assignment.group ?? '?'}`;
}
