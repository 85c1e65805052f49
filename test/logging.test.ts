import test from 'ava';
import { loggerFor, loggingCreate } from '../src/log/logger.ts';
import { redactText, scrubText } from '../src/log/redact.ts';
import { LogRing } from '../src/log/ring.ts';

function capture(level: 'info' | 'debug' = 'info', ringSize = 50) {
  const lines: string[] = [];
  const logging = loggingCreate({ level, ringSize, sink: { write: (line) => lines.push(line) } });
  return { ...logging, lines, text: () => lines.join('') };
}

const SECRETS = [
  'hunter2',
  'tok-abc123',
  'mqttpw',
  'MIIEvQIBADANBg',
  'sk_live_99',
  'qs-secret',
  'bearer-xyz-123',
  'cookie-val',
];

test('secrets never reach the output, wherever they are logged', (t) => {
  const { logger, text, lines } = capture();
  const mqtt = loggerFor(logger, 'mqtt', { url: 'mqtts://fleet:mqttpw@broker.example:8883' });
  mqtt.info(
    { password: 'hunter2', auth: { deep: { token: 'tok-abc123' } }, list: [{ apiKey: 'sk_live_99' }] },
    'connect',
  );
  mqtt.warn('fetching https://cdn.example/x.mp4?sig=abc&token=qs-secret');
  mqtt.error(new Error('rejected: Authorization: Bearer bearer-xyz-123'), 'auth failed');
  mqtt.info({ headers: { Cookie: 'cookie-val' } }, 'request');
  mqtt.info(`key file:\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n`);
  mqtt.info({ pem: '-----BEGIN EC PRIVATE KEY-----\nMIIEvQIBADANBg' }, 'truncated key');
  t.is(lines.length, 6);
  for (const secret of SECRETS) t.false(text().includes(secret), `${secret} leaked`);
  // What is not secret survives, so the lines stay useful.
  t.true(text().includes('broker.example:8883'));
  t.true(text().includes('https://cdn.example/x.mp4?sig=[redacted]&token=[redacted]'));
  t.true(text().includes('[redacted private key]'));
});

test('lines are JSON with level names and the component', (t) => {
  const { logger, lines } = capture();
  loggerFor(logger, 'display', { connector: 'HDMI-A-1' }).warn('no signal');
  const entry = JSON.parse(lines[0] ?? '');
  t.is(entry.level, 'warn');
  t.is(entry.component, 'display');
  t.is(entry.connector, 'HDMI-A-1');
  t.is(entry.msg, 'no signal');
  t.regex(entry.time, /^\d{4}-\d\d-\d\dT/);
});

test('the ring keeps redacted lines and filters by level', (t) => {
  const { logger, ring } = capture('debug');
  logger.debug('d');
  logger.info({ password: 'hunter2' }, 'i');
  logger.error('e');
  t.deepEqual(
    ring.tail().map((e) => e.msg),
    ['d', 'i', 'e'],
  );
  t.deepEqual(
    ring.tail({ level: 'info' }).map((e) => e.msg),
    ['i', 'e'],
  );
  t.deepEqual(
    ring.tail({ limit: 1 }).map((e) => e.msg),
    ['e'],
  );
  t.is(ring.tail({ level: 'info' })[0]?.password, '[redacted]');
});

test('lines below the configured level are neither written nor kept', (t) => {
  const { logger, lines, ring } = capture('info');
  logger.debug('hidden');
  t.is(lines.length, 0);
  t.is(ring.size, 0);
});

test('the ring is bounded by line count, oldest first out', (t) => {
  const ring = new LogRing({ lines: 10 });
  for (let i = 0; i < 25; i++) ring.push({ level: 'info', time: '', msg: String(i) }, 10);
  t.is(ring.size, 10);
  t.deepEqual(
    ring.tail().map((e) => e.msg),
    ['15', '16', '17', '18', '19', '20', '21', '22', '23', '24'],
  );
});

test('the ring is bounded by bytes, and a line larger than the budget is not kept', (t) => {
  const ring = new LogRing({ lines: 100, bytes: 1000 });
  for (let i = 0; i < 20; i++) ring.push({ level: 'info', time: '', msg: String(i) }, 300);
  t.is(ring.size, 3);
  t.deepEqual(
    ring.tail().map((e) => e.msg),
    ['17', '18', '19'],
  );
  ring.push({ level: 'info', time: '', msg: 'huge' }, 5000);
  t.false(ring.tail().some((e) => e.msg === 'huge'));
});

test('subscribers see new lines until they unsubscribe', (t) => {
  const { logger, ring } = capture();
  const seen: string[] = [];
  const unsubscribe = ring.subscribe((entry) => seen.push(entry.msg ?? ''));
  logger.info('one');
  unsubscribe();
  logger.info('two');
  t.deepEqual(seen, ['one']);
});

test('scrubText leaves ordinary text alone', (t) => {
  const text = 'decoder hw=vaapi fps=59.94 url=https://cdn.example/a.mp4 path=/var/lib/multihead';
  t.is(scrubText(text), text);
});

// Pre-signed URLs (S3, GCS) and tokens in queries: the value must go wherever the URL is quoted.
const SIGNED = [
  ['X-Amz-Signature', 'a1b2c3d4e5f6signature'],
  ['X-Amz-Security-Token', 'FQoGZXIvYXdzEJr-sessiontoken'],
  ['X-Amz-Credential', 'AKIAIOSFODNN7EXAMPLE%2F20240101'],
  ['X-Goog-Signature', '0f1e2d3c4b5a-googsig'],
  ['X-Goog-Credential', 'svc%40project.iam.gserviceaccount.com'],
  ['sig', 'sv-sig-value'],
  ['access_token', 'ya29.access'],
  ['apiKey', 'key-value-123'],
  ['client_secret', 'shh-secret'],
  ['PASSWORD', 'hunter2-upper'],
] as const;

test('redactText: every query key naming a sig, signature, token, credential, key, secret or password, any case', (t) => {
  const url = `https://user:pa55w0rd@media.example.com/v.mp4?page=2&${SIGNED.map(([k, v]) => `${k}=${v}`).join('&')}#t=5`;
  for (const text of [url, JSON.stringify({ source: url, nested: [{ url }] }), `playing ${url} now`]) {
    const out = redactText(text);
    for (const [key, value] of SIGNED) {
      t.false(out.includes(value), `${key} in ${out}`);
      t.true(out.includes(`${key}=[redacted]`), `${key} is still named`);
    }
    t.false(out.includes('pa55w0rd'), 'userinfo');
    t.false(out.includes('user:'), 'the user name too');
    t.true(out.includes('page=2'), 'harmless parameters stay');
    t.true(out.includes('media.example.com/v.mp4'), 'the host and path stay');
  }
  // A URL passed inside another URL's query, percent-encoded.
  const inner = redactText('https://cdn/p?next=https%3A%2F%2Fu%3Apw9%40h%2Fz%3FX-Amz-Signature%3Dzz99%26ok%3D1');
  t.false(inner.includes('zz99'), inner);
  t.false(inner.includes('pw9'), inner);
  t.true(inner.includes('ok%3D1'));
  t.is(redactText(''), '', 'an empty MQTT payload stays empty');
});
