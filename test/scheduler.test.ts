import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { type ClockChange, ClockWatch, kernelClockSource } from '../src/content/clock-watch.ts';
import { type Content, contentValidate, type ScheduleWindow } from '../src/content/model.ts';
import { scheduleAt } from '../src/content/scheduler.ts';
import { loadAddon } from '../src/native/addon.ts';

const SHA = 'a'.repeat(64);
const utc = (iso: string): number => Date.parse(iso.endsWith('Z') ? iso : `${iso}Z`);
const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());

/** One output on one schedule; playlists "a", "b", "c" and "idle" exist. */
function content(
  timezone: string,
  windows: ScheduleWindow[],
  extra: { default?: string; outputs?: Content['outputs'] } = { default: 'idle' },
): Content {
  return contentValidate(
    deepFreeze({
      version: 1,
      media: [{ id: 'm', url: 'http://example.invalid/m.mp4', sha256: SHA, size: 10, type: 'video' }],
      playlists: ['a', 'b', 'c', 'idle'].map((id) => ({ id, items: [{ media: 'm' }] })),
      schedules: [
        { id: 'main', timezone, windows, ...(extra.default !== undefined ? { default: extra.default } : {}) },
      ],
      outputs: extra.outputs ?? [{ output: 'HDMI-A-1', schedule: 'main' }],
    }),
  );
}

/** Frozen so a test fails if the scheduler ever writes to its input. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const playing = (c: Content, at: number, output = 'HDMI-A-1'): string | null =>
  scheduleAt(at, c).perOutput[output]?.playlist ?? null;

test('a weekday window: inside plays it, outside the default, and the next change is its end', (t) => {
  const c = content('UTC', [
    { id: 'day', playlist: 'a', days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '09:00', end: '17:00' },
  ]);
  // 2024-06-03 is a Monday.
  const inside = scheduleAt(utc('2024-06-03T12:00:00'), c);
  t.like(inside.perOutput['HDMI-A-1'], { playlist: 'a', source: 'window', window: 'day', schedule: 'main' });
  t.regex(inside.perOutput['HDMI-A-1']?.reason ?? '', /window day of schedule main \(09:00-17:00 UTC, priority 0\)/);
  t.is(iso(inside.nextChangeAt), '2024-06-03T17:00:00.000Z');
  t.like(inside.next?.['HDMI-A-1'], { playlist: 'idle', source: 'default' });
  t.is(playing(c, utc('2024-06-03T17:00:00')), 'idle', 'the end is exclusive');
  t.is(playing(c, utc('2024-06-03T08:59:59')), 'idle');
  t.is(playing(c, utc('2024-06-03T09:00:00')), 'a', 'the start is inclusive');
  // Friday evening: the next change skips the weekend.
  t.is(iso(scheduleAt(utc('2024-06-07T18:00:00'), c).nextChangeAt), '2024-06-10T09:00:00.000Z');
  t.is(playing(c, utc('2024-06-08T12:00:00')), 'idle', 'Saturday');
});

test('the scheduler is pure: same answer twice, input untouched (frozen), a Date or epoch ms alike', (t) => {
  const c = content('Europe/Berlin', [{ playlist: 'a', start: '06:00', end: '10:00' }]);
  const at = utc('2024-03-31T05:00:00');
  t.deepEqual(scheduleAt(at, c), scheduleAt(new Date(at), c));
});

test('Europe/Berlin spring forward: a window starting in the skipped hour starts at the first valid instant after', (t) => {
  // 2024-03-31: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
  const c = content('Europe/Berlin', [{ id: 'w', playlist: 'a', start: '02:30', end: '04:00' }]);
  t.is(playing(c, utc('2024-03-31T00:59:59')), 'idle');
  t.is(iso(scheduleAt(utc('2024-03-31T00:00:00'), c).nextChangeAt), '2024-03-31T01:00:00.000Z');
  t.is(playing(c, utc('2024-03-31T01:00:00')), 'a', '03:00 CEST, the first instant after 02:30 that exists');
  const during = scheduleAt(utc('2024-03-31T01:30:00'), c);
  t.is(iso(during.nextChangeAt), '2024-03-31T02:00:00.000Z', 'ends at 04:00 CEST');
  // The day before and after, 02:30 exists: 01:30 UTC (CET) and 00:30 UTC (CEST).
  t.is(iso(scheduleAt(utc('2024-03-30T00:00:00'), c).nextChangeAt), '2024-03-30T01:30:00.000Z');
  t.is(iso(scheduleAt(utc('2024-03-31T12:00:00'), c).nextChangeAt), '2024-04-01T00:30:00.000Z');
});

test('Europe/Berlin spring forward: a window wholly inside the skipped hour does not run that night', (t) => {
  const c = content('Europe/Berlin', [{ playlist: 'a', start: '02:00', end: '03:00' }]);
  t.is(playing(c, utc('2024-03-31T01:00:00')), 'idle');
  t.is(playing(c, utc('2024-03-31T00:59:59')), 'idle');
  t.is(iso(scheduleAt(utc('2024-03-30T23:00:00'), c).nextChangeAt), '2024-04-01T00:00:00.000Z', 'next night');
});

test('Europe/Berlin spring forward: a daytime window keeps its wall-clock times (UTC shifts an hour)', (t) => {
  const c = content('Europe/Berlin', [{ playlist: 'a', start: '09:00', end: '17:00' }]);
  t.is(iso(scheduleAt(utc('2024-03-30T00:00:00'), c).nextChangeAt), '2024-03-30T08:00:00.000Z');
  t.is(iso(scheduleAt(utc('2024-03-31T00:00:00'), c).nextChangeAt), '2024-03-31T07:00:00.000Z');
  t.is(iso(scheduleAt(utc('2024-03-31T08:00:00'), c).nextChangeAt), '2024-03-31T15:00:00.000Z');
});

test('Europe/Berlin fall back: a repeated wall time means its first occurrence; a window does not run twice', (t) => {
  // 2024-10-27: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:00-03:00 happens twice.
  const c = content('Europe/Berlin', [
    { id: 'long', playlist: 'a', start: '02:30', end: '05:00' },
    { id: 'short', playlist: 'b', start: '01:00', end: '02:30' },
  ]);
  t.is(iso(scheduleAt(utc('2024-10-26T22:00:00'), c).nextChangeAt), '2024-10-26T23:00:00.000Z', '01:00 CEST');
  t.is(playing(c, utc('2024-10-26T23:30:00')), 'b');
  // "short" ends and "long" starts at the FIRST 02:30 (CEST, 00:30 UTC).
  t.is(iso(scheduleAt(utc('2024-10-26T23:30:00'), c).nextChangeAt), '2024-10-27T00:30:00.000Z');
  t.is(playing(c, utc('2024-10-27T00:30:00')), 'a');
  // 01:15 UTC is 02:15 CET, the second pass through the hour: "short" does not come back.
  t.is(playing(c, utc('2024-10-27T01:15:00')), 'a');
  t.is(playing(c, utc('2024-10-27T01:45:00')), 'a', '02:45 CET, the second 02:30 does not restart anything');
  // 05:00 CET is 04:00 UTC: the window lasted 3.5 hours of real time.
  t.is(iso(scheduleAt(utc('2024-10-27T01:15:00'), c).nextChangeAt), '2024-10-27T04:00:00.000Z');
});

test('America/New_York: DST both ways, with a window across midnight', (t) => {
  // 2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC); 2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC).
  const c = content('America/New_York', [{ id: 'night', playlist: 'a', start: '22:00', end: '06:00' }]);
  // Saturday 22:00 EST = 03:00 UTC Sunday; ends 06:00 EDT = 10:00 UTC: seven real hours.
  t.is(iso(scheduleAt(utc('2024-03-09T20:00:00'), c).nextChangeAt), '2024-03-10T03:00:00.000Z');
  t.is(iso(scheduleAt(utc('2024-03-10T03:00:00'), c).nextChangeAt), '2024-03-10T10:00:00.000Z');
  t.is(playing(c, utc('2024-03-10T09:59:59')), 'a');
  t.is(playing(c, utc('2024-03-10T10:00:00')), 'idle');
  // The autumn night lasts nine real hours: 22:00 EDT (02:00 UTC) to 06:00 EST (11:00 UTC).
  t.is(iso(scheduleAt(utc('2024-11-03T02:00:00'), c).nextChangeAt), '2024-11-03T11:00:00.000Z');
  const short = content('America/New_York', [{ playlist: 'b', start: '01:30', end: '01:45' }]);
  t.is(playing(short, utc('2024-11-03T05:35:00')), 'b', '01:35 EDT, first pass');
  t.is(playing(short, utc('2024-11-03T06:35:00')), 'idle', '01:35 EST, second pass: not again');
});

test('a window across midnight belongs to the day it starts on', (t) => {
  const c = content('UTC', [{ id: 'fri-night', playlist: 'a', days: ['fri'], start: '22:00', end: '02:00' }]);
  // 2024-06-07 is a Friday.
  t.is(playing(c, utc('2024-06-07T23:00:00')), 'a');
  t.is(playing(c, utc('2024-06-08T01:59:59')), 'a', 'Saturday 01:59 still belongs to Friday night');
  t.is(playing(c, utc('2024-06-08T02:00:00')), 'idle');
  t.is(playing(c, utc('2024-06-08T23:00:00')), 'idle', 'Saturday night is not in days');
  t.is(playing(c, utc('2024-06-09T01:00:00')), 'idle');
  t.is(iso(scheduleAt(utc('2024-06-08T03:00:00'), c).nextChangeAt), '2024-06-14T22:00:00.000Z');
  const allDay = content('UTC', [{ playlist: 'b', days: ['sun'], start: '00:00', end: '24:00' }]);
  t.is(playing(allDay, utc('2024-06-09T23:59:59')), 'b', '24:00 ends at the next midnight');
  t.is(playing(allDay, utc('2024-06-10T00:00:00')), 'idle');
});

test('leap days: a date range on Feb 29 and day-of-week rules on it', (t) => {
  const c = content('Europe/Berlin', [
    { id: 'leap', playlist: 'a', start: '00:00', end: '24:00', from: '2024-02-29', until: '2024-02-29', priority: 1 },
    { id: 'thursdays', playlist: 'b', days: ['thu'], start: '08:00', end: '20:00' },
  ]);
  // Berlin midnight of 2024-02-29 is 23:00 UTC on the 28th.
  t.is(iso(scheduleAt(utc('2024-02-28T12:00:00'), c).nextChangeAt), '2024-02-28T23:00:00.000Z');
  t.is(playing(c, utc('2024-02-28T23:00:00')), 'a');
  t.is(playing(c, utc('2024-02-29T12:00:00')), 'a', 'Feb 29 2024 is a Thursday; the leap window outranks it');
  // The Thursday window's end at 20:00 changes nothing; the leap day's end does.
  t.is(iso(scheduleAt(utc('2024-02-29T12:00:00'), c).nextChangeAt), '2024-02-29T23:00:00.000Z');
  t.is(playing(c, utc('2024-02-29T23:00:00')), 'idle', 'March 1st is a Friday');
  t.is(playing(c, utc('2024-03-07T12:00:00')), 'b', 'an ordinary Thursday');
});

test('leap days: ranges across the end of February, in leap and common years', (t) => {
  const c = content('UTC', [{ playlist: 'a', start: '12:00', end: '13:00', from: '2024-02-28', until: '2024-03-01' }]);
  t.is(playing(c, utc('2024-02-29T12:30:00')), 'a');
  t.is(playing(c, utc('2024-03-01T12:30:00')), 'a');
  t.is(playing(c, utc('2024-03-02T12:30:00')), 'idle');
  t.is(iso(scheduleAt(utc('2024-02-28T13:00:00'), c).nextChangeAt), '2024-02-29T12:00:00.000Z');
  const common = content('UTC', [
    { playlist: 'a', start: '12:00', end: '13:00', from: '2025-02-28', until: '2025-03-01' },
  ]);
  t.is(iso(scheduleAt(utc('2025-02-28T13:00:00'), common).nextChangeAt), '2025-03-01T12:00:00.000Z');
  t.is(iso(scheduleAt(utc('2025-03-01T13:00:00'), common).nextChangeAt), null, 'nothing after the range');
});

test('overlapping windows: higher priority wins, equal priority the one listed first; a hidden start is no change', (t) => {
  const c = content('UTC', [
    { id: 'low', playlist: 'a', start: '08:00', end: '20:00', priority: 1 },
    { id: 'high', playlist: 'b', start: '12:00', end: '14:00', priority: 5 },
    { id: 'tie', playlist: 'c', start: '10:00', end: '18:00', priority: 1 },
  ]);
  t.is(playing(c, utc('2024-06-03T09:00:00')), 'a');
  t.is(playing(c, utc('2024-06-03T11:00:00')), 'a', 'tie with low: low is listed first');
  t.is(playing(c, utc('2024-06-03T13:00:00')), 'b');
  t.is(playing(c, utc('2024-06-03T15:00:00')), 'a');
  // From 09:00 the next change is 12:00: tie's start at 10:00 changes nothing.
  t.is(iso(scheduleAt(utc('2024-06-03T09:00:00'), c).nextChangeAt), '2024-06-03T12:00:00.000Z');
  const after = scheduleAt(utc('2024-06-03T13:00:00'), c);
  t.is(iso(after.nextChangeAt), '2024-06-03T14:00:00.000Z');
  t.like(after.next?.['HDMI-A-1'], { playlist: 'a', window: 'low' });
  // Same playlist, another window: still a change (the status must say which window).
  const same = content('UTC', [
    { id: 'one', playlist: 'a', start: '08:00', end: '12:00' },
    { id: 'two', playlist: 'a', start: '12:00', end: '16:00' },
  ]);
  t.is(iso(scheduleAt(utc('2024-06-03T09:00:00'), same).nextChangeAt), '2024-06-03T12:00:00.000Z');
});

test('date ranges: a window waits for its first day and stops after its last', (t) => {
  const c = content('Europe/Berlin', [
    { id: 'sale', playlist: 'a', start: '10:00', end: '18:00', from: '2024-12-01', until: '2024-12-24' },
  ]);
  t.is(playing(c, utc('2024-11-30T12:00:00')), 'idle');
  t.is(iso(scheduleAt(utc('2024-11-15T12:00:00'), c).nextChangeAt), '2024-12-01T09:00:00.000Z');
  t.is(playing(c, utc('2024-12-24T12:00:00')), 'a');
  t.is(playing(c, utc('2024-12-25T12:00:00')), 'idle');
});

test('an empty schedule plays its default; no default gives a reason instead of a black screen', (t) => {
  const empty = scheduleAt(utc('2024-06-03T12:00:00'), content('UTC', []));
  t.like(empty.perOutput['HDMI-A-1'], { playlist: 'idle', source: 'default' });
  t.is(empty.nextChangeAt, null);
  t.is(empty.next, null);
  const none = scheduleAt(
    utc('2024-06-03T12:00:00'),
    content('UTC', [{ playlist: 'a', start: '20:00', end: '21:00' }], {}),
  );
  t.like(none.perOutput['HDMI-A-1'], { playlist: null, source: 'none' });
  t.regex(none.perOutput['HDMI-A-1']?.reason ?? '', /no window of schedule main is active and it has no default/);
});

test('fixed playlists and video-wall groups: every tile gets the playlist and its crop', (t) => {
  const c = content('UTC', [{ playlist: 'a', start: '08:00', end: '20:00' }], {
    default: 'idle',
    outputs: [
      { output: 'HDMI-A-1', playlist: 'c' },
      {
        group: 'wall',
        schedule: 'main',
        tiles: [
          { output: 'HDMI-A-2', crop: { x: 0, y: 0, width: 0.5, height: 1 } },
          { output: 'HDMI-A-3', crop: { x: 0.5, y: 0, width: 0.5, height: 1 } },
        ],
      },
    ],
  });
  const r = scheduleAt(utc('2024-06-03T12:00:00'), c);
  t.like(r.perOutput['HDMI-A-1'], { playlist: 'c', source: 'fixed', assignment: 'HDMI-A-1' });
  t.like(r.perOutput['HDMI-A-2'], { playlist: 'a', assignment: 'group:wall', crop: { x: 0, width: 0.5 } });
  t.like(r.perOutput['HDMI-A-3'], { playlist: 'a', assignment: 'group:wall', crop: { x: 0.5, width: 0.5 } });
  t.is(iso(r.nextChangeAt), '2024-06-03T20:00:00.000Z');
});

test('seconds in window times', (t) => {
  const c = content('UTC', [{ playlist: 'a', start: '12:00:30', end: '12:00:45' }]);
  t.is(playing(c, utc('2024-06-03T12:00:29')), 'idle');
  t.is(playing(c, utc('2024-06-03T12:00:30')), 'a');
  t.is(iso(scheduleAt(utc('2024-06-03T12:00:31'), c).nextChangeAt), '2024-06-03T12:00:45.000Z');
});

test('13 ClockWatch: a wall-clock step is reported with its size; slewing and a busy event loop are not steps', (t) => {
  let wall = 1_000_000;
  let mono = 5_000;
  const changes: ClockChange[] = [];
  const w = new ClockWatch({
    now: () => wall,
    monotonic: () => mono,
    sync: () => ({ synchronized: true, source: 'adjtimex' }),
    onChange: (c) => changes.push(c),
  });
  // 10 s pass, NTP slews 5 ms: no step.
  wall += 10_005;
  mono += 10_000;
  w.check();
  // Nothing checked for a minute (a blocked loop): both clocks moved alike, no step.
  wall += 60_000;
  mono += 60_000;
  w.check();
  t.deepEqual(changes, []);
  wall -= 3_600_000; // stepped back an hour
  mono += 1000;
  wall += 1000;
  w.check();
  t.deepEqual(changes, [{ kind: 'step', deltaMs: -3_600_000 }]);
  t.like(w.state, { steps: 1, synchronized: true, lastStep: { deltaMs: -3_600_000 } });
  w.check();
  t.is(changes.length, 1, 'a step is reported once');
});

test('13 ClockWatch: the first synchronisation is reported once; losing it is a state change', (t) => {
  let synced: boolean | null = false;
  const changes: ClockChange[] = [];
  const w = new ClockWatch({
    now: () => 0,
    monotonic: () => 0,
    sync: () => ({ synchronized: synced, source: 'adjtimex' }),
    onChange: (c) => changes.push(c),
  });
  t.like(w.state, { synchronized: false, steps: 0 });
  w.check();
  t.deepEqual(changes, []);
  synced = true;
  w.check();
  w.check();
  t.deepEqual(changes, [{ kind: 'synchronized', source: 'adjtimex' }]);
  t.truthy(w.state.synchronizedAt);
  synced = false;
  w.check();
  t.deepEqual(changes.at(-1), { kind: 'state' });
});

test('13 kernelClockSource: adjtimex through the addon when it has clockState, else the timesyncd marker', (t) => {
  const addonSource = kernelClockSource(() => ({ synchronized: true, maxErrorUs: 10 }));
  t.deepEqual(addonSource(), { synchronized: true, source: 'adjtimex' });
  const failing = kernelClockSource(() => {
    throw new Error('EPERM');
  });
  t.deepEqual(failing(), { synchronized: null, source: 'none' });
  const dir = mkdtempSync(join(tmpdir(), 'multihead-timesync-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, 'synchronized');
  const fileSource = kernelClockSource(undefined, marker);
  t.deepEqual(fileSource(), { synchronized: null, source: 'none' }, 'no marker tells nothing');
  writeFileSync(marker, '');
  t.deepEqual(fileSource(), { synchronized: true, source: 'timesyncd' });
});

test('13 the addon reads the kernel clock state (adjtimex, read-only)', (t) => {
  const state = loadAddon().clockState();
  t.is(typeof state.synchronized, 'boolean');
  t.true(state.maxErrorUs >= 0);
  // STA_UNSYNC (0x40) is the bit `synchronized` reflects.
  t.is(state.synchronized, (state.status & 0x40) === 0);
});

test('display-off windows: the displays sleep overnight, across both DST changes, and wake on the wall-clock time', (t) => {
  // Europe/Berlin: off from 23:00 to 06:00 every night; 2024-03-31 loses 02:00-03:00, 2024-10-27 repeats it.
  const c = content('Europe/Berlin', [{ id: 'night', display: 'off', start: '23:00', end: '06:00' }], { default: 'a' });
  const at = (iso: string) => scheduleAt(utc(iso), c);
  const night = at('2024-03-30T23:00:00').perOutput['HDMI-A-1'];
  t.like(night, { playlist: null, display: 'off', source: 'window', window: 'night' });
  t.regex(night?.reason ?? '', /^display off: window night of schedule main \(23:00-06:00 Europe\/Berlin/);
  // Spring forward: 23:00 CET (22:00 UTC) to 06:00 CEST (04:00 UTC): six real hours.
  t.is(iso(at('2024-03-30T22:00:00').nextChangeAt), '2024-03-31T04:00:00.000Z');
  t.like(at('2024-03-30T22:00:00').next?.['HDMI-A-1'], { playlist: 'a', source: 'default' });
  t.false('display' in (at('2024-03-31T04:00:00').perOutput['HDMI-A-1'] ?? {}), 'awake at 06:00 CEST');
  // Fall back: 23:00 CEST (21:00 UTC) to 06:00 CET (05:00 UTC): eight real hours, off all through.
  t.is(at('2024-10-26T21:00:00').perOutput['HDMI-A-1']?.display, 'off');
  t.is(at('2024-10-27T01:30:00').perOutput['HDMI-A-1']?.display, 'off', 'the repeated hour');
  t.is(iso(at('2024-10-26T21:00:00').nextChangeAt), '2024-10-27T05:00:00.000Z');
  t.is(at('2024-10-27T05:00:00').perOutput['HDMI-A-1']?.playlist, 'a');
  // A higher-priority window inside the night plays (the displays are on for it).
  const late = content(
    'UTC',
    [
      { id: 'night', display: 'off', start: '23:00', end: '06:00' },
      { id: 'gala', playlist: 'b', start: '23:30', end: '01:00', priority: 5 },
    ],
    { default: 'a' },
  );
  t.like(scheduleAt(utc('2024-06-07T23:45:00'), late).perOutput['HDMI-A-1'], { playlist: 'b', window: 'gala' });
  t.is(scheduleAt(utc('2024-06-08T01:00:00'), late).perOutput['HDMI-A-1']?.display, 'off');
});

test('display-off windows: a window needs a playlist or "display": "off", not both', (t) => {
  const e = t.throws(() =>
    content('UTC', [
      { playlist: 'a', display: 'off', start: '01:00', end: '02:00' },
      { start: '03:00', end: '04:00' },
    ]),
  );
  t.regex(
    e?.message ?? '',
    /\$\.schedules\[0\]\.windows\[0\]: give either "playlist" or "display": "off", not both or neither/,
  );
  t.regex(e?.message ?? '', /\$\.schedules\[0\]\.windows\[1\]: give either/);
});
