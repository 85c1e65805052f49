import test from 'ava';
import { configLoad } from '../src/config/load.ts';
import { isLoopbackAddress, isLoopbackBind, tokenMatches } from '../src/http/access.ts';
import { RateLimiter } from '../src/rate-limit.ts';
import { HealthTracker } from '../src/status/health.ts';
import { StatusTracker } from '../src/status/status.ts';
import { EventBus } from '../src/supervisor/bus.ts';

test('loopback: IPv4 127/8, ::1 and IPv4-mapped forms; LAN and hostnames are not', (t) => {
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) t.true(isLoopbackAddress(a), a);
  for (const a of ['10.0.0.7', '::ffff:10.0.0.7', '0.0.0.0', '::', 'fe80::1', '', undefined]) {
    t.false(isLoopbackAddress(a), String(a));
  }
  t.true(isLoopbackBind('localhost'));
  t.false(isLoopbackBind('kiosk.local'));
});

test('token: exact match only; an empty configured token matches nothing', (t) => {
  t.true(tokenMatches('abc', 'abc'));
  for (const given of ['abd', 'ab', 'abcd', '', undefined]) t.false(tokenMatches(given, 'abc'), String(given));
  t.false(tokenMatches('', ''));
  t.true(tokenMatches('x'.repeat(5000), 'x'.repeat(5000)), 'long tokens hash to equal-length digests');
});

test('rate limiter (the one MQTT uses too): burst, then a steady rate, per client; the table stays bounded', (t) => {
  let now = 0;
  const limiter = new RateLimiter({ burst: 3, perSecond: 2, maxKeys: 100, now: () => now });
  t.deepEqual(
    [1, 2, 3, 4].map(() => limiter.wait('a')),
    [0, 0, 0, 1],
  );
  t.is(limiter.wait('b'), 0, 'another client has its own bucket');
  now += 500;
  t.is(limiter.wait('a'), 0, 'one token back after half a second at 2/s');
  t.is(limiter.wait('a'), 1);
  for (let i = 0; i < 1000; i++) limiter.wait(`10.0.${i >> 8}.${i & 255}`);
  t.is(limiter.keys, 100);
});

/** The built-in defaults alone: no file, no environment. */
const defaultsOnly = () =>
  configLoad({ env: {}, hostname: 'unit', useEnv: false, defaultPath: '/nonexistent/config.json' }).config;

test('status document: sources are redacted and the health is the shared judgement', (t) => {
  const bus = new EventBus(() => {});
  const config = defaultsOnly();
  const signed = 'https://u:pw-unit@cdn.example/v.mp4?X-Amz-Signature=sig-unit&X-Goog-Credential=cred-unit&n=1';
  const decoder = { id: 1, source: signed, consumers: ['Virtual-1'], hw: false, codec: 'h264', width: 64, height: 64 };
  bus.emit('decode.status', { status: { sharedDecode: true, maxDecoders: 4, decoders: [decoder] } as never });
  const status = new StatusTracker({ bus, config, versions: { app: '1', addon: '1', node: 'v24' }, startedAt: 0 });
  t.teardown(() => status.close());
  const text = JSON.stringify(status.document());
  for (const secret of ['pw-unit', 'sig-unit', 'cred-unit']) t.false(text.includes(secret), secret);
  t.true(text.includes('cdn.example/v.mp4?X-Amz-Signature=[redacted]'));
  const health = HealthTracker.acquire({ bus, config });
  t.teardown(() => health.release());
  t.deepEqual(status.document().health, { state: health.assess().state, reasons: health.assess().reasons });
  let changes = 0;
  status.onChange(() => changes++);
  bus.emit('supervisor.state', { state: 'running' });
  t.true(changes >= 1, 'a health change is a status change (MQTT debounces the publish)');
  t.deepEqual(status.document().health.reasons, ['display not ready']);
});

test('one health tracker per bus: every reader acquires the same, the last release closes it', (t) => {
  const bus = new EventBus(() => {});
  const config = defaultsOnly();
  let stalledMs = 0;
  const a = HealthTracker.acquire({ bus, config });
  const b = HealthTracker.acquire({ bus, config, frameLoops: () => [{ name: 'vblank', ageMs: stalledMs }] });
  t.is(a, b);
  bus.emit('supervisor.state', { state: 'running' });
  stalledMs = 5000;
  t.deepEqual(a.frameLoopsNow().stalled, ['frame loop vblank stalled (no turn for 2 s or more)']);
  t.like(a.assess(), {
    state: 'error',
    stalled: true,
    reasons: ['frame loop vblank stalled (no turn for 2 s or more)', 'display not ready'],
  });
  a.release();
  b.release();
  t.not(HealthTracker.acquire({ bus, config }), a, 'a new tracker after the last release');
});
