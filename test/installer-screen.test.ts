import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import jsqr from 'jsqr';
import { mqttCreate } from '../src/extensions/mqtt.ts';
import { failureState } from '../src/mqtt/connection.ts';
import {
  type InstallerFacts,
  installerSource,
  installerText,
  lanAddresses,
  statusPageUrl,
} from '../src/playback/installer-screen.ts';
import { type Box, boxStart, getJson } from './helpers/box.ts';
import { counterClip } from './helpers/clips.ts';
import { jpegDecode } from './helpers/jpeg.ts';
import { mosquittoStart } from './helpers/mosquitto.ts';
import { until } from './helpers/supervisor.ts';

const facts: InstallerFacts = {
  name: 'Foyer left',
  id: 'mh-0123456789ab',
  version: '1.4.0',
  addresses: ['10.0.0.5', 'fd00::5'],
  broker: { state: 'connected', broker: 'mqtts://fleet.example:8883' },
  outputs: [
    { name: 'HDMI-A-1', width: 1920, height: 1080, refresh: 60 },
    { name: 'HDMI-A-2', width: 1280, height: 720, refresh: 59.94 },
  ],
  httpPort: 8780,
  httpLocalOnly: false,
};

test('the installer text: name first, id, firmware, addresses, broker, each output mode, the status page', (t) => {
  t.deepEqual(installerText(facts).split('\n'), [
    'Foyer left',
    'id: mh-0123456789ab',
    'firmware: multihead 1.4.0',
    'ip: 10.0.0.5 fd00::5',
    'broker: connected',
    '  mqtts://fleet.example:8883',
    'HDMI-A-1: 1920x1080@60',
    'HDMI-A-2: 1280x720@60',
    '',
    'status page: http://10.0.0.5:8780/',
    '',
    'no content assigned',
  ]);
});

test('the broker line says connecting, connected, refused and unreachable with the reason, or off', (t) => {
  const line = (broker: InstallerFacts['broker']): string =>
    installerText({ ...facts, broker })
      .split('\n')
      .slice(4, 6)
      .join('|');
  const b = 'mqtt://10.0.0.1:1883';
  t.is(line({ state: 'off' }), 'broker: off (no mqtt.url)|HDMI-A-1: 1920x1080@60');
  t.is(line({ state: 'connecting', broker: b }), `broker: connecting|  ${b}`);
  t.is(line({ state: 'refused', broker: b, detail: 'Not authorized' }), `broker: refused (Not authorized)|  ${b}`);
  t.is(
    line({ state: 'unreachable', broker: b, detail: 'ECONNREFUSED 10.0.0.1:1883' }),
    `broker: unreachable (ECONNREFUSED 10.0.0.1:1883)|  ${b}`,
  );
  // From the errors mqtt.js and Node raise: a CONNACK reason code is a refusal, a socket error is not.
  const connack = Object.assign(new Error('Connection refused: Not authorized'), { code: 135 });
  t.deepEqual(failureState(connack, b), { state: 'refused', broker: b, detail: 'Not authorized' });
  const socket = Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:1883'), { code: 'ECONNREFUSED' });
  t.deepEqual(failureState(socket, b), { state: 'unreachable', broker: b, detail: 'ECONNREFUSED 10.0.0.1:1883' });
});

test('no secret reaches the screen; what the font cannot draw is a question mark; lines are cut', (t) => {
  const text = installerText(
    {
      ...facts,
      name: 'Café hunter2',
      broker: {
        state: 'unreachable',
        broker: 'mqtt://h:1883',
        detail: `mqtt://kiosk:pw0rd@h abc123secret ${'x'.repeat(200)}`,
      },
    },
    ['hunter2', 'abc123secret'],
  );
  t.false(text.includes('pw0rd'), text);
  t.false(text.includes('hunter2'), text);
  t.false(text.includes('abc123secret'), text);
  t.true(text.startsWith('Caf? '), text);
  t.true(text.split('\n').every((l) => l.length <= 64));
});

test('the status page URL: first LAN address (IPv6 bracketed), none without an address or a port', (t) => {
  t.is(statusPageUrl(['fd00::5'], 8780), 'http://[fd00::5]:8780/');
  t.is(statusPageUrl([], 8780), undefined);
  t.is(statusPageUrl(['10.0.0.5'], 0), undefined);
  t.true(installerText({ ...facts, httpLocalOnly: true }).includes('(loopback only: see http.bind)'));
  const lo = { netmask: '', mac: '', cidr: null };
  t.deepEqual(
    lanAddresses({
      lo: [{ ...lo, address: '127.0.0.1', family: 'IPv4', internal: true }],
      eth0: [
        { ...lo, address: 'fe80::1', family: 'IPv6', internal: false, scopeid: 2 },
        { ...lo, address: 'fd00::2', family: 'IPv6', internal: false, scopeid: 0 },
        { ...lo, address: '169.254.3.4', family: 'IPv4', internal: false },
        { ...lo, address: '192.0.2.2', family: 'IPv4', internal: false },
      ],
    }),
    ['192.0.2.2', 'fd00::2'],
    'loopback and link-local left out, IPv4 first',
  );
  t.regex(
    installerSource(1280, 720, 'a\nb', 'http://x/'),
    /^pattern:info\?size=1280x720&.*text=a%0Ab&qr=http%3A%2F%2Fx%2F$/,
  );
});

/** What an output shows, as the screenshot command returns it: the JPEG decoded, and the QR code read from it. */
async function shot(box: Box, output: string): Promise<{ luma: Buffer; qr: string | undefined } | undefined> {
  const reply = (await box.controller.commands.invoke(
    'screenshot',
    { outputs: [output] },
    { transport: 'internal' },
  )) as {
    result?: { shots: Array<{ jpegBase64: string }> };
    error?: { code: string };
  };
  // Right after a switch the output may not have shown the new source's frame yet (the next vblank).
  if (reply.error?.code === 'ERR_NO_PICTURE') return undefined;
  const base64 = reply.result?.shots[0]?.jpegBase64;
  if (!base64) throw new Error(`no screenshot of ${output}: ${JSON.stringify(reply)}`);
  const jpeg = Buffer.from(base64, 'base64');
  const { width, height, planes } = await jpegDecode(jpeg);
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (const [i, y] of planes[0].entries()) rgba.set([y, y, y, 255], i * 4);
  // jsqr is CommonJS: under Node's ESM its default import is module.exports, whose `default` is jsQR.
  return { luma: planes[0], qr: jsqr.default(rgba, width, height)?.data };
}

function decodersOf(box: Box) {
  const ready = box.controller.bus.latest('playback.ready');
  if (!ready) throw new Error('playback is not ready');
  return ready.decode.status().decoders;
}

test.serial(
  'a box with no content and no demo: the installer screen on every output, its QR code the status page, redrawn when the broker comes',
  async (t) => {
    const broker = await mosquittoStart(t, { stopped: true });
    const box = await boxStart(
      t,
      { playback: { demo: false }, device: { name: 'Ladder test', id: 'ladder-1' }, mqtt: { url: broker.url } },
      [{ name: 'mqtt', create: (c) => mqttCreate(c, { backoff: { initialMs: 200, maxMs: 400 }, restart: () => {} }) }],
    );
    const bus = box.controller.bus;
    const port = Number(new URL(box.url).port);
    const url = `http://${lanAddresses()[0]}:${port}/`;
    const unreachable = `broker: unreachable (ECONNREFUSED 127.0.0.1:${broker.port})`;
    const before = await until(() => {
      const s = bus.latest('installer.screen');
      return s?.url === url && s.text.includes(unreachable) ? s : undefined;
    }, 'the installer screen with the status page and the broker unreachable');
    t.true(before.text.startsWith('Ladder test\nid: ladder-1\n'), before.text);
    const first = await until(() => shot(box, 'Virtual-1'), 'a screenshot of Virtual-1');
    t.is(first.qr, url, 'the QR code on Virtual-1 reads as the status page URL');
    t.is((await until(() => shot(box, 'Virtual-2'), 'a screenshot of Virtual-2')).qr, url, 'and on Virtual-2');

    // A still: one decoded frame, held, for as long as the text stays the same (two previews, a second apart).
    const stills = () => decodersOf(box).filter((d) => d.source.startsWith('pattern:info?'));
    t.is(stills().length, 1, 'one decoder for both outputs of one size');
    const previews: unknown[] = [];
    const off = bus.on('preview.updated', (p) => previews.push(p));
    await until(() => previews.length >= 4, 'two rounds of previews');
    off();
    t.is(stills()[0]?.frames, 1, 'one frame decoded, however long it shows');
    // Nothing to play is not a failure: a still that never moves is not content that stopped.
    const health = await until(async () => {
      const { body } = await getJson(`${box.url}/healthz`);
      return body.state === 'booting' ? undefined : body;
    }, 'a health judgement');
    t.like(health, { state: 'degraded', reasons: ['nothing to play: no content assigned'] });

    await broker.start();
    const after = await until(() => {
      const s = bus.latest('installer.screen');
      return s?.text.includes(`broker: connected\n  mqtt://127.0.0.1:${broker.port}`) ? s : undefined;
    }, 'the installer screen redrawn with the broker connected');
    t.false(after.text.includes('unreachable'));
    const second = await until(async () => {
      const s = await shot(box, 'Virtual-1');
      return s && changed(first.luma, s.luma) > 200 ? s : undefined;
    }, 'the new still on Virtual-1');
    t.is(second.qr, url, 'the redrawn screen still carries the QR code');
    t.is(stills().length, 1, 'the old still was let go');

    // Something plays: the installer screen goes from that output, and comes back when it stops.
    const media = join(box.config.dataDir, 'media');
    mkdirSync(media, { recursive: true });
    counterClip(media, 'counter.mp4', '320x180');
    const origin = { transport: 'internal' } as const;
    t.like(await box.controller.commands.invoke('play', { source: 'counter.mp4', outputs: ['Virtual-1'] }, origin), {
      ok: true,
    });
    t.deepEqual(stills()[0]?.consumers.length, 1, 'only Virtual-2 keeps the installer screen');
    const clip = await until(async () => {
      const s = await shot(box, 'Virtual-1');
      return s && changed(second.luma, s.luma) > 200 ? s : undefined;
    }, 'the clip on Virtual-1');
    t.is(clip.qr, undefined, 'the clip, no QR code, on Virtual-1');
    await box.controller.commands.invoke('stop', { outputs: ['Virtual-1'] }, origin);
    await until(async () => (await shot(box, 'Virtual-1'))?.qr === url, 'the installer screen back on Virtual-1');
  },
);

test.serial(
  'a broker that refuses the credentials: the screen says refused with its reason, never the password',
  async (t) => {
    const broker = await mosquittoStart(t, { auth: { username: 'kiosk', password: 'right-one' } });
    const password = 'wrong-Pa55word';
    const box = await boxStart(
      t,
      { playback: { demo: false }, mqtt: { url: broker.url, username: 'kiosk', password } },
      [{ name: 'mqtt', create: (c) => mqttCreate(c, { backoff: { initialMs: 200, maxMs: 400 }, restart: () => {} }) }],
    );
    const screen = await until(() => {
      const s = box.controller.bus.latest('installer.screen');
      return s?.text.includes('broker: refused (') ? s : undefined;
    }, 'the installer screen with the broker refusing');
    t.regex(screen.text, /broker: refused \(Not authorized\)\n {2}mqtt:\/\/127\.0\.0\.1:\d+\n/);
    t.false(screen.text.includes(password));
    t.false(screen.text.includes('kiosk'), 'not even the user name');
  },
);

/** How many pixels differ by more than a JPEG's noise. */
function changed(a: Buffer, b: Buffer): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs((a[i] ?? 0) - (b[i] ?? 0)) > 40) n++;
  return n;
}
