import test from 'ava';
import { isLoopbackAddress, isLoopbackBind, tokenMatches } from '../src/http/access.ts';
import { RateLimiter } from '../src/rate-limit.ts';

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
