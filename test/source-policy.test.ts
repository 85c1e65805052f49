import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { mediaDirs, sourceCheck, urlProblem, WEB_SCHEMES } from '../src/playback/source-policy.ts';

const root = mkdtempSync(join(tmpdir(), 'multihead-source-policy-'));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
const dataDir = join(root, 'data');
const [media, cache] = mediaDirs(dataDir) as [string, string];
mkdirSync(media, { recursive: true });
mkdirSync(cache, { recursive: true });
mkdirSync(join(media, 'sub'));
writeFileSync(join(media, 'promo.mp4'), 'x');
writeFileSync(join(media, 'sub', 'clip.mp4'), 'x');
writeFileSync(join(cache, 'a'.repeat(64)), 'x');
const secret = join(root, 'secret.mp4');
writeFileSync(secret, 'not for the screen');
symlinkSync(secret, join(media, 'out.mp4'));
symlinkSync(join(media, 'promo.mp4'), join(media, 'alias.mp4'));
symlinkSync(root, join(media, 'up'));
const dirs = mediaDirs(dataDir);

const code = (source: unknown): string | undefined => {
  try {
    sourceCheck(source, dirs);
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code;
  }
};

test('media names and paths inside the media directories open by their real path', (t) => {
  t.deepEqual(sourceCheck('promo.mp4', dirs), { kind: 'file', source: join(media, 'promo.mp4') });
  t.deepEqual(sourceCheck('sub/clip.mp4', dirs), { kind: 'file', source: join(media, 'sub', 'clip.mp4') });
  t.deepEqual(sourceCheck(join(media, 'promo.mp4'), dirs), { kind: 'file', source: join(media, 'promo.mp4') });
  t.deepEqual(sourceCheck('a'.repeat(64), dirs), { kind: 'file', source: join(cache, 'a'.repeat(64)) });
  // A link that stays inside is opened as what it points at.
  t.deepEqual(sourceCheck('alias.mp4', dirs), { kind: 'file', source: join(media, 'promo.mp4') });
  t.is(code('missing.mp4'), 'ERR_DECODE_OPEN');
});

test('paths that leave the media directories are refused, by name, by "..", or by a symlink', (t) => {
  for (const source of [
    secret,
    '/etc/passwd',
    '../secret.mp4',
    `${media}/../../secret.mp4`,
    'sub/../../secret.mp4',
    'out.mp4',
    'up/secret.mp4',
    join(media, 'out.mp4'),
    'sub',
    media,
  ]) {
    t.is(code(source), 'ERR_SOURCE_NOT_ALLOWED', source);
  }
});

test('URLs: http(s) and rtsp(s) only; FFmpeg protocols and generated sources are refused, naming what is allowed', (t) => {
  t.deepEqual(sourceCheck('https://cdn.example/live/index.m3u8', dirs), {
    kind: 'http',
    source: 'https://cdn.example/live/index.m3u8',
  });
  t.deepEqual(sourceCheck('rtsps://cam.local:322/stream', dirs), {
    kind: 'rtsp',
    source: 'rtsps://cam.local:322/stream',
  });
  for (const source of [
    'lavfi:movie=/etc/passwd',
    'lavfi:testsrc2[a];testsrc2[b];[a][b]psnr=stats_file=/tmp/x',
    'file:/etc/passwd',
    'file:promo.mp4',
    'concat:/a.ts|/b.ts',
    'subfile,,start,0,end,10,,:/etc/passwd',
    'pipe:0',
    'tcp://127.0.0.1:9',
    'data:video/mp4;base64,AAAA',
    'crypto+http://x/y',
    'HTTP://example.com/a.mp4',
    'http:///etc/passwd',
    'http://exa mple.com/a.mp4',
    'promo.mp4\n',
  ]) {
    t.is(code(source), 'ERR_SOURCE_NOT_ALLOWED', source);
  }
  const message = t.throws(() => sourceCheck('pipe:0', dirs))?.message ?? '';
  t.regex(message, /"pipe:" is not allowed/);
  t.true(message.includes(`allowed: a media file name or a path inside ${media} or ${cache}, an http:// or https://`));
  t.is(code(''), 'ERR_BAD_ARGUMENT');
  t.is(code(7), 'ERR_BAD_ARGUMENT');
});

test('urlProblem: the one rule for URLs fetched or uploaded to, never quoting the URL', (t) => {
  t.is(urlProblem('https://cdn.example/a.mp4?X-Amz-Signature=abc', WEB_SCHEMES), undefined);
  t.is(urlProblem('rtsp://cam/x', WEB_SCHEMES), '"rtsp:" is not allowed; allowed: http://, https://');
  t.is(urlProblem('file:///etc/passwd', WEB_SCHEMES), '"file:" is not allowed; allowed: http://, https://');
  t.is(urlProblem('https:///x', WEB_SCHEMES), 'has no host');
  t.is(urlProblem('//host/x', WEB_SCHEMES), 'has no scheme; allowed: http://, https://');
  const leak = urlProblem('ftp://user:hunter2@x/y?token=s3cr3t', WEB_SCHEMES) ?? '';
  t.false(leak.includes('hunter2') || leak.includes('s3cr3t'), leak);
});
