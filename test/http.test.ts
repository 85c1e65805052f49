import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import test, { type ExecutionContext } from 'ava';
import { httpCreate } from '../src/extensions/http.ts';
import { loadAddon } from '../src/native/addon.ts';
import { boxStart, getJson } from './helpers/box.ts';
import { sleep, supervisorStart, until } from './helpers/supervisor.ts';

// frameLoopsStall is refused without it; it is read when the hook is called.
process.env.MULTIHEAD_TEST_HOOKS = '1';

/** Raw bytes to the endpoint and the raw answer: for requests fetch() refuses to send. */
function raw(url: string, request: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(request));
    let text = '';
    socket.on('data', (d) => {
      text += d;
    });
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

// Serial: the frame-loop stall and the process environment are process-wide.
test.serial('a running box: healthz, status, outputs, previews, metrics', async (t) => {
  const box = await boxStart(t);
  const healthy = await until(async () => {
    const r = await getJson(`${box.url}/healthz`);
    return r.status === 200 && r.body.outputs.every((o: { playing: boolean }) => o.playing) ? r : undefined;
  }, 'healthz 200 with both outputs playing');
  // Software decoding was asked for, so nothing is degraded: ok, no reasons.
  t.like(healthy.body, { healthy: true, state: 'ok', reasons: [], broker: 'off' });
  t.deepEqual(
    healthy.body.outputs.map((o: { name: string }) => o.name),
    ['Virtual-1', 'Virtual-2'],
  );
  t.true(healthy.body.frameLoops.some((l: { name: string; ageMs: number }) => l.name === 'vblank' && l.ageMs < 2000));
  t.is(healthy.headers.get('cache-control'), 'no-store');

  const status = await until(async () => {
    const r = await getJson(`${box.url}/status`);
    return r.body.decode ? r : undefined;
  }, 'a status document with decoders');
  t.like(status.body, { device: { name: 'test-host' }, supervisor: 'running', display: { mode: 'virtual' } });
  t.is(status.body.decode.decoders.length, 1, 'one shared decoder for the demo');
  t.deepEqual(status.body.decode.decoders[0].consumers, ['Virtual-1', 'Virtual-2']);

  const outputs = await until(async () => {
    const r = await getJson(`${box.url}/outputs`);
    return r.body.outputs.every((o: { preview: unknown }) => o.preview) ? r : undefined;
  }, 'previews of both outputs');
  t.like(outputs.body.outputs[0], { name: 'Virtual-1', playing: true, preview: { width: 320, height: 180 } });
  t.is(outputs.body.outputs[0].source, 'pattern:testcard?size=1280x720&rate=30');
  // Screen facts: the layout in force (the default) and no display power on a virtual output.
  t.like(outputs.body.outputs[0], {
    rotation: 0,
    layout: { fit: 'fit', anchor: 'centre', background: '000000' },
    power: null,
    monitor: null,
  });

  const jpeg = await fetch(`${box.url}/outputs/Virtual-2/preview.jpg?at=1`);
  t.is(jpeg.status, 200);
  t.is(jpeg.headers.get('content-type'), 'image/jpeg');
  const bytes = Buffer.from(await jpeg.arrayBuffer());
  t.deepEqual([bytes[0], bytes[1]], [0xff, 0xd8]);
  const first = createHash('sha256').update(bytes).digest('hex');
  const later = await until(
    async () => {
      const b = Buffer.from(await (await fetch(`${box.url}/outputs/Virtual-2/preview.jpg`)).arrayBuffer());
      const hash = createHash('sha256').update(b).digest('hex');
      return hash !== first ? hash : undefined;
    },
    'a newer preview',
    5000,
  );
  t.not(later, first, 'the moving demo gives a different picture a second later');

  const unknown = await getJson(`${box.url}/outputs/HDMI-A-9/preview.jpg`);
  t.is(unknown.status, 404);
  t.deepEqual(unknown.body.error, {
    code: 'ERR_UNKNOWN_OUTPUT',
    message: 'no output "HDMI-A-9"; known: Virtual-1, Virtual-2',
    known: ['Virtual-1', 'Virtual-2'],
  });

  const metrics = await fetch(`${box.url}/metrics`);
  t.regex(metrics.headers.get('content-type') ?? '', /^text\/plain/);
  await metrics.text();
  // fps needs two counter samples at least a second apart.
  const text = await until(async () => {
    const body = await (await fetch(`${box.url}/metrics`)).text();
    return body.includes('multihead_output_fps{') ? body : undefined;
  }, 'an fps sample');
  t.regex(text, /^multihead_output_fps\{output="Virtual-1"\} \d+(\.\d+)?$/m);
  t.regex(text, /^multihead_output_frames_total\{output="Virtual-2"\} [1-9]\d*$/m);
  t.regex(text, /^multihead_output_dropped_frames_total\{output="Virtual-1"\} \d+$/m);
  t.regex(text, /^multihead_decoders 1$/m);
  t.regex(text, /^multihead_decoder_consumers\{decoder="\d+",path="software"\} 2$/m);
  t.regex(text, /^multihead_decoder_bytes_copied_per_frame\{decoder="\d+",path="software"\} \d+$/m);
  t.regex(text, /^multihead_uptime_seconds \d/m);
  t.regex(text, /^multihead_health\{state="ok"\} 1$/m);
  t.regex(text, /^multihead_mqtt_configured 0$/m, 'MQTT off');
  t.false(text.includes('lavfi:'), 'no source in any label');
});

test.serial('/logs: tail, level filter, bad parameters, and a live follow over server-sent events', async (t) => {
  const box = await boxStart(t, { preview: { intervalS: 0 } });
  box.logger.warn({ component: 'test' }, 'a warning for the tail');
  const all = await getJson(`${box.url}/logs?lines=3`);
  t.is(all.status, 200);
  t.is(all.body.lines.length, 3);
  const warn = await getJson(`${box.url}/logs?level=warn&lines=1000`);
  t.true(warn.body.lines.length >= 1);
  t.true(warn.body.lines.every((l: { level: string }) => ['warn', 'error', 'fatal'].includes(l.level)));
  t.true(warn.body.lines.some((l: { msg: string }) => l.msg === 'a warning for the tail'));

  for (const [query, message] of [
    ['level=loud', /^level must be one of trace, debug, info, warn, error, fatal, got "loud"$/],
    ['lines=0', /^lines must be an integer from 1 to 1000, got "0"$/],
    ['lines=1e3', /^lines must be an integer from 1 to 1000, got "1e3"$/],
    ['follow=yes', /^follow must be 1 or 0, got "yes"$/],
  ] as const) {
    const r = await getJson(`${box.url}/logs?${query}`);
    t.is(r.status, 400, query);
    t.is(r.body.error.code, 'ERR_BAD_PARAMETER');
    t.regex(r.body.error.message, message);
  }

  const controller = new AbortController();
  const r = await fetch(`${box.url}/logs?follow=1&lines=1&level=info`, { signal: controller.signal });
  t.is(r.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  const reader = r.body?.getReader();
  if (!reader) return t.fail('no body');
  let text = '';
  const decoder = new TextDecoder();
  const readUntil = async (probe: RegExp): Promise<void> => {
    while (!probe.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended before ${probe}`);
      text += decoder.decode(value);
    }
  };
  await readUntil(/^event: log\ndata: \{.*\}\n\n/m);
  box.logger.debug({ component: 'test' }, 'below the filter');
  box.logger.info({ component: 'test' }, 'live line one');
  await readUntil(/live line one/);
  t.false(text.includes('below the filter'), 'the level filter applies to the live lines too');
  const events = text.split('\n\n').filter((e) => e.startsWith('event: log'));
  const last = JSON.parse(events.at(-1)?.split('data: ')[1] ?? '{}');
  t.like(last, { level: 'info', component: 'test', msg: 'live line one' });
  controller.abort();
});

test.serial('bad requests get 4xx JSON errors and the endpoint keeps answering', async (t) => {
  const box = await boxStart(t, { preview: { intervalS: 0 } });
  const post = await getJson(`${box.url}/status`, { method: 'POST', body: 'x' });
  t.is(post.status, 405);
  t.is(post.headers.get('allow'), 'GET, HEAD');
  t.is(post.body.error.code, 'ERR_METHOD_NOT_ALLOWED');
  const missing = await getJson(`${box.url}/nope/../../etc/passwd`);
  t.is(missing.status, 404);
  t.is(missing.body.error.code, 'ERR_NOT_FOUND');
  const badName = await getJson(`${box.url}/outputs/%E0%A4%A/preview.jpg`);
  t.is(badName.status, 400);
  t.is(badName.body.error.message, 'the output name is not valid percent-encoding');
  const noPreview = await getJson(`${box.url}/outputs/Virtual-1/preview.jpg`);
  t.is(noPreview.status, 404);
  t.deepEqual(noPreview.body.error.code, 'ERR_NO_PREVIEW');
  t.is(noPreview.body.error.message, 'previews are off (preview.intervalS is 0)');
  const head = await fetch(`${box.url}/status`, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(await head.text(), '');

  const garbage = await raw(box.url, 'BLAH\r\n\r\n');
  t.regex(garbage, /^HTTP\/1\.1 400 Bad Request\r\n/);
  t.regex(garbage, /\{"error":\{"code":"ERR_BAD_REQUEST","message":"malformed request: HPE_/);
  const absolute = await raw(
    box.url,
    'GET http://evil.example/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  );
  t.regex(absolute, /^HTTP\/1\.1 400 /);
  t.regex(absolute, /"the request target must be a path"/);
  const huge = await raw(box.url, `GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  t.regex(huge, /^HTTP\/1\.1 431 /);
  const long = await getJson(`${box.url}/${'x'.repeat(5000)}`);
  t.is(long.status, 404);
  t.true(long.body.error.message.length < 200, 'a long path is not echoed whole');
  // Still alive after all of that.
  t.is((await getJson(`${box.url}/status`)).status, 200);
});

test.serial('requests are rate limited per client address', async (t) => {
  const box = await boxStart(t, { preview: { intervalS: 0 }, http: { rateLimit: { burst: 5, perSecond: 1 } } });
  const statuses: number[] = [];
  for (let i = 0; i < 7; i++) statuses.push((await fetch(`${box.url}/healthz`)).status);
  t.deepEqual(statuses.slice(5), [429, 429]);
  const limited = await getJson(`${box.url}/status`);
  t.is(limited.status, 429);
  t.is(limited.headers.get('retry-after'), '1');
  t.is(limited.body.error.code, 'ERR_RATE_LIMITED');
  await sleep(1100);
  t.not((await fetch(`${box.url}/status`)).status, 429, 'a token again after a second');
});

test.serial('a LAN bind without a token does not listen, says why, and the supervisor runs on', async (t) => {
  const sup = await supervisorStart(t, [{ name: 'http', create: (c) => httpCreate(c) }], {
    http: { bind: '0.0.0.0', port: 0 },
  });
  t.is(sup.controller.state, 'running');
  t.is(sup.controller.bus.latest('http.listening'), undefined);
  t.true(
    sup.lines.some(
      (l) =>
        l.includes('"code":"ERR_HTTP_TOKEN_REQUIRED"') &&
        l.includes('http.bind 0.0.0.0 opens it to the network, which needs http.token'),
    ),
  );
});

test.serial('a port already taken is logged and the supervisor runs on', async (t) => {
  const first = await boxStart(t, { preview: { intervalS: 0 } });
  const port = Number(new URL(first.url).port);
  const sup = await supervisorStart(t, [{ name: 'http', create: (c) => httpCreate(c) }], { http: { port } });
  t.is(sup.controller.state, 'running');
  t.true(sup.lines.some((l) => l.includes('"code":"ERR_HTTP_LISTEN"') && l.includes('EADDRINUSE')));
});

/**
 * A non-loopback address to connect from, the same on every machine: 198.18.0.77 (a benchmark
 * range, never routed) added to `lo` for the test. Needs root (CAP_NET_ADMIN); without it the test
 * fails, because a LAN check that cannot reach the LAN checks nothing.
 */
const LAN_ADDRESS = '198.18.0.77';
function lanAddressAdd(t: ExecutionContext): string {
  const present = (): boolean => networkInterfaces().lo?.some((a) => a.address === LAN_ADDRESS) ?? false;
  if (!present()) {
    const r = spawnSync('ip', ['address', 'add', `${LAN_ADDRESS}/32`, 'dev', 'lo'], { encoding: 'utf8' });
    if (r.status !== 0) {
      throw new Error(
        `cannot add the LAN test address ${LAN_ADDRESS} to lo (needs root and ip): ${r.error?.message ?? r.stderr.trim()}`,
      );
    }
    t.teardown(() => {
      spawnSync('ip', ['address', 'del', `${LAN_ADDRESS}/32`, 'dev', 'lo']);
    });
  }
  if (!present()) throw new Error(`${LAN_ADDRESS} was added to lo but the machine does not list it`);
  return LAN_ADDRESS;
}

test.serial('on the LAN: the token is required, compared exactly, and never appears in a response', async (t) => {
  const lan = lanAddressAdd(t);
  const token = 's3cret-token-value-0123456789abcdef';
  const box = await boxStart(t, { http: { bind: '0.0.0.0', token }, preview: { intervalS: 0 } });
  const port = new URL(box.url).port;
  const lanUrl = `http://${lan}:${port}`;
  const none = await getJson(`${lanUrl}/status`);
  t.is(none.status, 401);
  t.is(none.headers.get('www-authenticate'), 'Bearer realm="multihead"');
  t.is(none.body.error.code, 'ERR_UNAUTHORIZED');
  t.is((await fetch(`${lanUrl}/status`, { headers: { authorization: `Bearer ${token.slice(0, -1)}` } })).status, 401);
  t.is((await fetch(`${lanUrl}/status`, { headers: { authorization: `Bearer ${token}x` } })).status, 401);
  t.is((await fetch(`${lanUrl}/status`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
  t.is((await fetch(`${lanUrl}/healthz?token=${token}`)).status !== 401, true, '?token= for the page');
  t.is((await fetch(`http://127.0.0.1:${port}/status`)).status, 200, 'loopback needs no token');
  // How a secret could reach the log: as a field, in a query, in a header echoed into a message.
  box.logger.info({ component: 'test', token }, `GET /status?token=${token} (Authorization: Bearer ${token})`);
  for (const path of ['/', '/status', '/healthz', '/outputs', '/metrics', '/logs?lines=1000']) {
    const body = await (await fetch(`${lanUrl}${path}`, { headers: { authorization: `Bearer ${token}` } })).text();
    t.false(body.includes(token), `${path} does not contain the token`);
  }
});

test.serial('healthz turns 503 naming the frame loop while native frame loops are stalled', async (t) => {
  const box = await boxStart(t, { preview: { intervalS: 0 } });
  await until(async () => (await fetch(`${box.url}/healthz`)).status === 200, 'healthy first');
  loadAddon().frameLoopsStall(3500);
  const stalled = await until(async () => {
    const r = await getJson(`${box.url}/healthz`);
    return r.status === 503 ? r : undefined;
  }, 'healthz 503');
  t.like(stalled.body, { healthy: false, state: 'error' });
  t.regex(stalled.body.reasons[0], /^frame loop vblank stalled \(no turn for 2 s or more\)$/);
  await until(async () => (await fetch(`${box.url}/healthz`)).status === 200, 'healthy again after the stall', 10_000);
  t.pass();
});

test.serial(
  'a /logs follower that does not read gets lines dropped and counted, not queued without bound',
  async (t) => {
    const box = await boxStart(t, { preview: { intervalS: 0 } }, [], { followBufferBytes: 64 * 1024 });
    const { hostname, port } = new URL(box.url);
    const socket = connect(Number(port), hostname);
    t.teardown(() => socket.destroy());
    await once(socket, 'connect');
    socket.setEncoding('utf8');
    socket.write('GET /logs?follow=1&lines=1 HTTP/1.1\r\nhost: box\r\n\r\n');
    let received = String((await once(socket, 'data'))[0]);
    t.regex(received, /^HTTP\/1.1 200/);
    // The client stops reading: the kernel's buffers fill, then the endpoint's own.
    socket.pause();
    const flood = 20_000;
    const filler = 'x'.repeat(1000);
    for (let i = 0; i < flood; i++) box.logger.info({ component: 'flood', i }, filler);
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    socket.resume();
    const marker = await until(() => /event: dropped\ndata: (\{.*\})\n/.exec(received), 'the dropped marker', 20_000);
    const { dropped, message } = JSON.parse(marker[1] as string) as { dropped: number; message: string };
    t.true(dropped > 0);
    t.is(message, `dropped ${dropped} lines: the client did not read fast enough`);
    const delivered = received
      .split('\n')
      .filter((l) => l.startsWith('data: ') && l.includes('"component":"flood"')).length;
    t.true(delivered < flood, `only what fits was queued (${delivered} of ${flood} delivered)`);
    t.true(delivered + dropped >= flood - 1, `every flood line was delivered or counted (${delivered} + ${dropped})`);
  },
);
