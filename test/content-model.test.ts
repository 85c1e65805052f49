import test from 'ava';
import { ContentError, contentParse, contentValidate } from '../src/content/model.ts';

const SHA = 'b'.repeat(64);

function valid(): Record<string, unknown> {
  return {
    version: 3,
    media: [
      { id: 'intro', url: 'https://cdn.example.com/intro.mp4', sha256: SHA, size: 1000, type: 'video' },
      {
        id: 'logo',
        url: 'https://cdn.example.com/logo.png',
        sha256: 'c'.repeat(64),
        size: 50,
        type: 'image',
        duration: 8,
      },
    ],
    playlists: [
      { id: 'day', items: [{ media: 'intro' }, { media: 'logo', duration: 5 }], loop: true, transition: 'gapless' },
      { id: 'night', items: [{ media: 'logo' }] },
    ],
    schedules: [
      {
        id: 'main',
        timezone: 'Europe/Berlin',
        default: 'night',
        windows: [{ id: 'open', playlist: 'day', days: ['mon', 'fri'], start: '08:00', end: '20:00', priority: 2 }],
      },
    ],
    outputs: [
      { output: 'HDMI-A-1', schedule: 'main' },
      {
        group: 'wall',
        playlist: 'day',
        tiles: [
          { output: 'HDMI-A-2', crop: { x: 0, y: 0, width: 0.5, height: 1 } },
          { output: 'HDMI-A-3', crop: { x: 0.5, y: 0, width: 0.5, height: 1 } },
        ],
      },
    ],
  };
}

/** Applies `change` to a fresh valid document and returns every problem, as "path: message". */
// biome-ignore lint/suspicious/noExplicitAny: tests poke at arbitrary depths of the document
function problems(change: (c: Record<string, any>) => void): string[] {
  const c = valid();
  change(c);
  try {
    contentValidate(c);
  } catch (error) {
    if (!(error instanceof ContentError)) throw error;
    return error.problems.map((p) => `${p.path}: ${p.message}`);
  }
  return [];
}

test('a full document validates and keeps its values', (t) => {
  const c = contentValidate(valid());
  t.is(c.version, 3);
  t.is(c.playlists[0]?.items.length, 2);
  t.is(c.outputs[1]?.tiles?.[1]?.crop.x, 0.5);
});

test('shape errors name the JSON path and what was wrong', (t) => {
  t.deepEqual(
    problems((c) => {
      c.media[0].sha256 = 'XYZ';
    }),
    ['$.media[0].sha256: "XYZ" must be 64 lowercase hex digits'],
  );
  t.deepEqual(
    problems((c) => {
      delete c.media[1].size;
    }),
    ['$.media[1]: missing "size"'],
  );
  t.deepEqual(
    problems((c) => {
      c.playlists[0].items[1].durationn = 5;
    }),
    ['$.playlists[0].items[1]: unknown field "durationn"'],
  );
  t.deepEqual(
    problems((c) => {
      c.media[0].type = 'audio';
    }),
    ['$.media[0].type: "audio" must be video or image'],
  );
  t.deepEqual(
    problems((c) => {
      c.schedules[0].windows[0].start = '25:00';
      c.schedules[0].windows[0].days = ['monday'];
    }),
    [
      '$.schedules[0].windows[0].days[0]: "monday" must be mon, tue, wed, thu, fri, sat or sun',
      '$.schedules[0].windows[0].start: "25:00" must be a local time HH:MM or HH:MM:SS (24-hour clock; 24:00 only as an end)',
    ],
  );
  t.deepEqual(
    problems((c) => {
      c.version = '3';
    }),
    ['$.version: "3" must be an integer from 1, raised by whoever publishes a new revision'],
  );
  t.deepEqual(
    problems((c) => {
      c.media[0].url = 'ftp://x/y';
    }),
    ['$.media[0].url: "ftp://x/y" must be an http:// or https:// URL'],
  );
});

test('media URLs go through the source policy: file: and FFmpeg protocols never pass, nor URLs without a host', (t) => {
  for (const url of ['file:///etc/passwd', 'concat:/a|/b', 'lavfi:movie=/etc/passwd', 'HTTP://x/y', 'rtsp://cam/x']) {
    const found = problems((c) => {
      c.media[0].url = url;
    });
    t.deepEqual(found, [`$.media[0].url: ${JSON.stringify(url)} must be an http:// or https:// URL`], url);
  }
  // Past the schema's pattern: the policy's own rules.
  for (const [url, why] of [
    ['http:///etc/passwd', 'has no host'],
    ['https://@/x', 'has no host'],
    ['https://cdn.example.com\\@evil/x', 'has spaces, backslashes or control characters'],
  ] as const) {
    const found = problems((c) => {
      c.media[1].url = url;
    });
    t.deepEqual(
      found,
      [`$.media[1].url: ERR_SOURCE_NOT_ALLOWED: the media URL ${why}; allowed: http:// and https:// URLs`],
      url,
    );
  }
});

test('cross-reference errors: unknown ids, duplicates, and what is known', (t) => {
  t.deepEqual(
    problems((c) => {
      c.playlists[1].items[0].media = 'logoo';
    }),
    ['$.playlists[1].items[0].media: unknown media id "logoo" (known: intro, logo)'],
  );
  t.deepEqual(
    problems((c) => {
      c.schedules[0].default = 'nope';
      c.schedules[0].windows[0].playlist = 'dya';
      c.outputs[0].schedule = 'mian';
    }),
    [
      '$.schedules[0].default: unknown playlist id "nope" (known: day, night)',
      '$.schedules[0].windows[0].playlist: unknown playlist id "dya" (known: day, night)',
      '$.outputs[0].schedule: unknown schedule id "mian" (known: main)',
    ],
  );
  t.deepEqual(
    problems((c) => {
      c.media[1].id = 'intro';
    }),
    [
      '$.media[1].id: media id "intro" is used twice (first at $.media[0])',
      // Both playlist references to "logo" now dangle.
      '$.playlists[0].items[1].media: unknown media id "logo" (known: intro)',
      '$.playlists[1].items[0].media: unknown media id "logo" (known: intro)',
    ],
  );
  t.deepEqual(
    problems((c) => {
      c.outputs[1].tiles[0].output = 'HDMI-A-1';
    }),
    ['$.outputs[1].tiles[0].output: output HDMI-A-1 is already assigned at $.outputs[0].output'],
  );
});

test('semantic errors: time zone, calendar dates, empty windows, images without duration, crops, assignments', (t) => {
  t.deepEqual(
    problems((c) => {
      c.schedules[0].timezone = 'Europe/Berln';
    }),
    ['$.schedules[0].timezone: "Europe/Berln" is not an IANA time zone this device knows (e.g. Europe/Berlin, UTC)'],
  );
  t.deepEqual(
    problems((c) => {
      c.schedules[0].windows[0].from = '2023-02-29';
      c.schedules[0].windows[0].until = '2023-01-01';
    }),
    [
      '$.schedules[0].windows[0].from: "2023-02-29" is not a calendar date',
      '$.schedules[0].windows[0].until: "2023-01-01" is before "from" (2023-02-29)',
    ],
  );
  t.deepEqual(
    problems((c) => {
      c.schedules[0].windows[0].end = '08:00';
    }),
    [
      '$.schedules[0].windows[0].end: the window starts and ends at 08:00: it would be empty (for a whole day use 00:00 to 24:00)',
    ],
  );
  t.deepEqual(
    problems((c) => {
      delete c.media[1].duration;
    }),
    [
      '$.playlists[1].items[0]: image "logo" has no duration: give the item a "duration" or the media a "duration" (seconds)',
    ],
  );
  t.deepEqual(
    problems((c) => {
      c.outputs[1].tiles[1].crop.x = 0.75;
    }),
    ['$.outputs[1].tiles[1].crop: the rectangle reaches past the video (x + width = 1.25, y + height = 1; at most 1)'],
  );
  t.deepEqual(
    problems((c) => {
      c.outputs[0].playlist = 'day';
      c.outputs[1].output = 'HDMI-A-9';
    }),
    [
      '$.outputs[0]: give either "schedule" or "playlist" (a fixed playlist), not both or neither',
      '$.outputs[1]: give either "output" (one output) or "group" with "tiles" (a video wall), not both or neither',
    ],
  );
  t.deepEqual(
    problems((c) => {
      c.media[1].sha256 = SHA;
    }),
    ['$.media[1].size: media "logo" has the sha256 of "intro" but size 50, not 1000'],
  );
});

test('the error message names the source and the first problems; JSON syntax errors too', (t) => {
  const e = t.throws(() => contentParse('{"version": 1,', '/data/content.json'), { instanceOf: ContentError });
  t.regex(e?.message ?? '', /^ERR_CONTENT_INVALID: \/data\/content\.json: \$: not valid JSON: /);
  t.is((e as ContentError).code, 'ERR_CONTENT_INVALID');
  const many = t.throws(() =>
    contentValidate({ version: 0, media: 1, playlists: 'x', schedules: 3, outputs: null, extra: 1 }),
  );
  t.regex(many?.message ?? '', /^ERR_CONTENT_INVALID: \$: unknown field "extra"; .*; and 1 more$/);
  t.throws(() => contentValidate(null), { message: /\$: null must be of type object/ });
});
