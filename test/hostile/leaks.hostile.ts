// Attacks on what the box says to the outside (issue 11, points 10 and 15, and "one health
// judgement"): secrets in sources reaching MQTT, the log or HTTP; short LAN tokens; a /logs client
// that never reads; a frame-loop stall that one reader sees and another does not. Against the real
// supervisor process and Debian's mosquitto.
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { clipMake } from '../helpers/clips.ts';
import { fakeLeds, ledRead } from '../helpers/fake-leds.ts';
import { mediaServerStart } from '../helpers/media-server.ts';
import type { Received } from '../helpers/mosquitto.ts';
import { notifyListen } from '../helpers/notify-socket.ts';
import { until } from '../helpers/supervisor.ts';
import { scratchDir, writeJson } from '../helpers/tmp.ts';
import { HostileBox } from './box.ts';

const BIN = new URL('../../bin/multihead', import.meta.url).pathname;

/** Secret values an operator may put in a media URL: none may leave the box. */
const SECRETS = {
  password: 'pw-Zq81-userinfo',
  amzSignature: 'amzsig0f9e8d7c6b5a',
  amzToken: 'FQoGZXIvYXdzamztoken77',
  amzCredential: 'AKIAHOSTILE0CRED',
  googCredential: 'svc-hostile-goog-cred',
  googSignature: 'googsig4242deadbeef',
  token: 'tok-hostile-31337',
} as const;

function signedUrl(port: number): string {
  const q = [
    'X-Amz-Algorithm=AWS4-HMAC-SHA256',
    `X-Amz-Credential=${SECRETS.amzCredential}`,
    `X-Amz-Security-Token=${SECRETS.amzToken}`,
    `X-Amz-Signature=${SECRETS.amzSignature}`,
    `X-Goog-Credential=${SECRETS.googCredential}`,
    `X-Goog-Signature=${SECRETS.googSignature}`,
    `token=${SECRETS.token}`,
  ].join('&');
  return `http://operator:${SECRETS.password}@127.0.0.1:${port}/clips/lobby.mp4?${q}`;
}

/** An HTTP server with a real clip (MPEG-TS, streamable without range requests) that plays for a while. */
async function clipServer(t: ExecutionContext): Promise<number> {
  const clip = clipMake(scratchDir(t), 'lobby.ts', [
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=320x240:rate=25:duration=60',
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-g',
    '25',
    '-f',
    'mpegts',
  ]);
  const server = await mediaServerStart();
  t.teardown(() => server.close());
  server.add('/clips/lobby.mp4', readFileSync(clip));
  return Number(new URL(server.url('/')).port);
}

/** Sends a command with a fresh reply address and waits for its reply (any topic under that address). */
async function command(box: HostileBox, name: string, body: Record<string, unknown>): Promise<Received> {
  const replyTo = `multihead/replies/fleet/${randomUUID()}`;
  await box.fleet.subscribe(`${replyTo}/#`, replyTo);
  await box.fleet.publish(`multihead/${box.id}/cmd/${name}`, JSON.stringify(body), {
    properties: { responseTopic: replyTo },
  });
  return box.fleet.next((m) => m.topic === replyTo || m.topic.startsWith(`${replyTo}/`), 15_000, `reply to ${name}`);
}

async function httpText(url: string): Promise<string> {
  return (await fetch(url)).text();
}

const leaked = (text: string): string[] =>
  Object.entries(SECRETS)
    .filter(([, value]) => text.includes(value))
    .map(([name]) => name);

test('10 a play of a signed URL with user:password: no secret in any MQTT message, the log, or HTTP', async (t) => {
  const box = await HostileBox.start(t, { file: { mqtt: { telemetryIntervalS: 1 } } });
  const http = await box.httpUrl();
  const source = signedUrl(await clipServer(t));
  const reply = await command(box, 'play', { args: { source } });
  t.log(`play reply: ${reply.text.slice(0, 300)}`);
  t.true(reply.text.includes('X-Amz-Signature=[redacted]'), 'the reply names the source, redacted');
  // The source travelled: telemetry samples the decoders (status follows them every minute).
  const sample = await box.fleet.next(
    (m) => m.topic === `multihead/${box.id}/telemetry` && m.text.includes('lobby.mp4'),
    20_000,
    'a telemetry sample naming the source',
  );
  t.regex(sample.text, /http:\/\/\[redacted\]@127\.0\.0\.1:\d+\/clips\/lobby\.mp4\?/);
  t.regex(sample.text, /X-Goog-Credential=\[redacted\]/);
  await box.logLine(/lobby\.mp4/, 'a log line naming the source');

  // Everything the box published: the fleet's own request on cmd/play is the only place the secrets belong.
  const mqtt = box.fleet.received.filter((m) => !m.topic.includes('/cmd/') && leaked(m.text).length > 0);
  t.deepEqual(
    mqtt.map((m) => `${m.topic}: ${leaked(m.text).join(', ')}`),
    [],
    'no MQTT message (status, telemetry, events, replies) carries a secret',
  );
  const logged = box.lines.filter((l) => leaked(l).length > 0);
  t.deepEqual(logged, [], 'no log line carries a secret');
  t.true(
    box.lines.some((l) => l.includes('lobby.mp4')),
    'the log does name the source',
  );
  for (const path of ['/status', '/healthz', '/outputs', '/metrics', '/logs?lines=1000']) {
    const body = await httpText(`${http}${path}`);
    t.deepEqual(leaked(body), [], `${path} carries no secret`);
  }
  t.true((await httpText(`${http}/outputs`)).includes('lobby.mp4'), '/outputs does name the source');
});

/** An HTTP source that refuses every request: FFmpeg fails to open it and says so, quoting the URL. */
async function refusingServer(t: ExecutionContext): Promise<number> {
  const server = await mediaServerStart();
  t.teardown(() => server.close());
  server.add('/clips/lobby.mp4', Buffer.from('x'), [], { kind: 'status', status: 403 });
  return Number(new URL(server.url('/')).port);
}

test('10 a signed source that fails to open: the error reply names it redacted, and nothing else carries a secret', async (t) => {
  const box = await HostileBox.start(t, { file: { log: { level: 'debug' } } });
  const http = await box.httpUrl();
  const reply = await command(box, 'play', { args: { source: signedUrl(await refusingServer(t)) } });
  const body = reply.json as { ok: boolean; error?: { code: string; message: string } };
  t.false(body.ok);
  // FFmpeg's error quotes the URL it could not open; the reply passes it on, redacted.
  t.regex(body.error?.message ?? '', /\[redacted\]@127\.0\.0\.1:\d+\/clips\/lobby\.mp4\?/);
  t.regex(body.error?.message ?? '', /X-Amz-Signature=\[redacted\]/);
  await command(box, 'ping', {});
  const published = box.fleet.received.filter((m) => !m.topic.includes('/cmd/'));
  t.deepEqual(
    published.filter((m) => leaked(m.text).length > 0).map((m) => `${m.topic}: ${leaked(m.text).join(', ')}`),
    [],
  );
  t.deepEqual(
    box.lines.filter((l) => leaked(l).length > 0),
    [],
  );
  for (const path of ['/status', '/healthz', '/outputs', '/logs?lines=1000']) {
    t.deepEqual(leaked(await httpText(`${http}${path}`)), [], path);
  }
});

test('15 a supervisor started with a short LAN token exits 78 and never opens the endpoint', async (t) => {
  const dir = scratchDir(t);
  const short = 'too-short-for-the-lan';
  const file = writeJson(dir, 'config.json', { http: { bind: '0.0.0.0', port: 0, token: short }, dataDir: dir });
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_')));
  const child = spawn(BIN, ['--config', file], {
    env: { ...env, MULTIHEAD_DISPLAY_DEVICE: '/dev/dri/card99' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    out += d;
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  t.is(code, 78, out);
  t.regex(out, /http\.token/);
  t.false(out.includes(short), 'the token is not printed');
  t.false(out.includes('status endpoint on'), 'nothing listened');
});

test('15 a LAN token shorter than 32 characters is refused by multihead config check (exit 78), without echoing it', (t) => {
  const dir = scratchDir(t);
  const short = 'short-lan-token-31-chars-long-x';
  t.is(short.length, 31);
  const file = writeJson(dir, 'config.json', { http: { bind: '0.0.0.0', token: short } });
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_')));
  const r = spawnSync(BIN, ['config', 'check', file], { encoding: 'utf8', env });
  t.is(r.status, 78, r.stderr);
  t.regex(r.stderr, /http\.token/);
  t.regex(r.stderr, /at least 32 characters/);
  t.false(r.stderr.includes(short), 'the refused token is not printed');
  const long = writeJson(dir, 'long.json', { http: { bind: '0.0.0.0', token: 'x'.repeat(32) } });
  t.is(spawnSync(BIN, ['config', 'check', long], { encoding: 'utf8', env }).status, 0, '32 characters pass');
});

/**
 * A follower that connects with a 4 KiB receive window and never reads, so everything the box sends
 * beyond a few kernel buffers waits in the supervisor (python3: Node cannot set SO_RCVBUF).
 */
function stuckFollower(t: ExecutionContext, url: string): { readAll: () => Promise<string> } {
  const { hostname, port } = new URL(url);
  const script = `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((${JSON.stringify(hostname)}, ${Number(port)}))
s.sendall(b"GET /logs?follow=1&lines=1 HTTP/1.1\\r\\nhost: box\\r\\n\\r\\n")
print("connected", flush=True)
sys.stdin.readline()
s.settimeout(3)
while True:
    try:
        b = s.recv(65536)
    except socket.timeout:
        break
    if not b:
        break
    sys.stdout.buffer.write(b)
sys.stdout.flush()
`;
  const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
  });
  return {
    readAll: async () => {
      await until(() => out.startsWith('connected'), 'the stuck follower to connect', 10_000);
      const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.stdin.write('\n');
      await done;
      return out;
    },
  };
}

const rssKiB = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);

/** The most a socket's kernel buffers can hold on this machine (send side of the box, receive side of the client). */
function kernelBufferMax(): number {
  const max = (file: string): number => Number(readFileSync(file, 'utf8').trim().split(/\s+/).at(-1));
  return max('/proc/sys/net/ipv4/tcp_wmem') + 8192;
}

test('15 a /logs client that never reads does not grow the supervisor without bound and is told "dropped N lines"', async (t) => {
  const box = await HostileBox.start(t);
  const http = await box.httpUrl();
  const follower = stuckFollower(t, http);
  await box.logLine(/"msg":"[^"]*"/, 'a log line');
  const pid = box.child?.pid as number;
  const before = rssKiB(pid);
  // A flood from outside, several times what the kernel can hold for a client that does not read:
  // whatever the client later gets beyond the kernel's share was held by the supervisor.
  const kernel = kernelBufferMax();
  const floodBytes = await logFlood(box, 4 * kernel);
  t.log(`flood of ${Math.round(floodBytes / 1024)} KiB of log text; supervisor RSS ${before} -> ${rssKiB(pid)} KiB`);
  const received = await follower.readAll();
  const marker = /event: dropped\ndata: (\{[^\n]*\})\n/.exec(received);
  t.truthy(marker, `a dropped marker in what the follower got (${received.length} bytes)`);
  const { dropped, message } = JSON.parse(marker?.[1] ?? '{}') as { dropped: number; message: string };
  t.true(dropped > 0);
  t.is(message, `dropped ${dropped} lines: the client did not read fast enough`);
  // The endpoint keeps at most 256 KiB per follower (and one line over it); the rest was the kernel's.
  const held = received.length - kernel;
  t.true(held < 1024 * 1024, `the supervisor held at most ${held} bytes for the follower (flood ${floodBytes})`);
});

/**
 * Makes the box log about `bytes` of text from outside: a desired config whose value breaks a
 * rule is rejected with a warning that quotes the value, so each message logs ~200 KB.
 */
async function logFlood(box: HostileBox, bytes: number): Promise<number> {
  const startLines = box.lines.length;
  const size = (): number => box.lines.slice(startLines).reduce((sum, l) => sum + l.length + 1, 0);
  const bind = 'b'.repeat(200_000);
  for (let version = 1; size() < bytes; version++) {
    const seen = size();
    await box.fleet.publish(
      `multihead/${box.id}/config/desired`,
      JSON.stringify({ version, config: { http: { bind: `${bind}${version}` } } }),
    );
    await until(() => size() > seen || undefined, `the box to log the rejection of desired version ${version}`, 10_000);
  }
  return size();
}

test('one health judgement: a frame-loop stall is an error on the LED, /healthz, MQTT status and systemd alike, and all recover', async (t) => {
  const leds = fakeLeds(scratchDir(t), ['status']);
  const notify = await notifyListen(t);
  const box = await HostileBox.start(t, {
    file: { led: { names: ['status'], sysfsPath: leds }, preview: { intervalS: 0 } },
    env: { MULTIHEAD_TEST_HOOKS: '1', MULTIHEAD_TEST_STALL_MS: '9000', NOTIFY_SOCKET: notify.path },
  });
  const http = await box.httpUrl();
  const ledState = (): string => {
    const led = ledRead(leds, 'status');
    return led.trigger === 'timer' ? `timer ${led.delay_on}/${led.delay_off}` : `${led.trigger} ${led.brightness}`;
  };
  const healthz = async (): Promise<{ status: number; body: { state: string; reasons: string[] } }> => {
    const r = await fetch(`${http}/healthz`);
    return { status: r.status, body: (await r.json()) as { state: string; reasons: string[] } };
  };
  const statusHealth = (m: Received): { state: string; reasons: string[] } | undefined =>
    m.topic === `multihead/${box.id}/status`
      ? (m.json as { health?: { state: string; reasons: string[] } }).health
      : undefined;
  const systemdStatus = (): string[] => notify.messages.map((m) => m.text).filter((m) => m.includes('STATUS='));

  await until(async () => (await healthz()).status === 200 || undefined, 'healthy first', 20_000);
  const calm = ledState();
  t.not(calm, 'timer 100/100', 'the LED does not say error before the stall');
  const mark = box.fleet.received.length;
  const notifyMark = systemdStatus().length;
  box.child?.kill('SIGUSR2');
  const stalled = await until(
    async () => {
      const h = await healthz();
      return h.status === 503 ? h : undefined;
    },
    '/healthz 503 during the stall',
    8000,
  );
  t.is(stalled.body.state, 'error');
  t.regex(stalled.body.reasons[0] ?? '', /^frame loop vblank stalled/);
  await until(() => (ledState() === 'timer 100/100' ? true : undefined), 'the LED blinking fast (error)', 8000);
  const onMqtt = await box.fleet.next(
    (m) => box.fleet.received.indexOf(m) >= mark && statusHealth(m)?.state === 'error',
    8000,
    'MQTT status with health error',
  );
  t.regex(statusHealth(onMqtt)?.reasons[0] ?? '', /^frame loop vblank stalled/);
  await until(
    () =>
      systemdStatus()
        .slice(notifyMark)
        .find((m) => /error: frame loop vblank stalled/.test(m)),
    'systemd STATUS= naming the stall',
    8000,
  );
  // And back: the same judgement clears everywhere once the loops go round again.
  await until(async () => (await healthz()).status === 200 || undefined, '/healthz 200 after the stall', 20_000);
  await until(() => (ledState() === calm ? true : undefined), 'the LED as before the stall', 10_000);
  await box.fleet.next(
    (m) => box.fleet.received.indexOf(m) > box.fleet.received.indexOf(onMqtt) && statusHealth(m)?.state !== 'error',
    10_000,
    'MQTT status without the error again',
  );
  t.pass();
});
