import { readFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { nodeFs } from '../src/content/fs.ts';
import { RateLimiter } from '../src/rate-limit.ts';
import { UpdateError } from '../src/update/errors.ts';
import { type ArtefactsFetchDeps, artefactsFetch, artefactsVerify, withRetries } from '../src/update/fetch.ts';
import { manifestFetch, manifestParse } from '../src/update/manifest.ts';
import { type MediaServer, mediaServerStart } from './helpers/media-server.ts';
import { scratchDir } from './helpers/tmp.ts';
import { type Artefacts, artefactsMake, artefactsServe, signingKeyMake } from './helpers/update-artefacts.ts';

async function serve(t: ExecutionContext): Promise<MediaServer> {
  const server = await mediaServerStart();
  t.teardown(() => server.close());
  return server;
}

function deps(overrides: Partial<ArtefactsFetchDeps> = {}): ArtefactsFetchDeps & { progress: number[] } {
  const progress: number[] = [];
  return {
    fetch: globalThis.fetch,
    fs: nodeFs,
    statfs: (path) => statfs(path),
    retry: { attempts: 3, baseMs: 5, maxMs: 20 },
    stallMs: 5000,
    signal: new AbortController().signal,
    onBytes: (done) => progress.push(done),
    progress,
    ...overrides,
  };
}

const manifestOf = (a: Artefacts) => manifestParse((a.files.get('SHA256SUMS') as Buffer).toString());

test('fetch: a cut mid-file resumes with an HTTP Range request, the file is whole and verified', async (t) => {
  const key = signingKeyMake(t);
  const a = artefactsMake(key, '0.2.0', { rootBytes: 512 * 1024 });
  const server = await serve(t);
  // The root image's first GET is cut after 200 KiB.
  const url = artefactsServe(server, 'fw', a, { [a.root]: [{ kind: 'drop', after: 200 * 1024 }] });
  const dir = scratchDir(t);
  const d = deps();
  const { artefacts } = manifestOf(a);
  const fetched = await artefactsFetch(url, artefacts, dir, d);
  t.is(fetched.bytesTotal, 512 * 1024 + 32 * 1024);
  const gets = server.requests.filter((r) => r.method === 'GET' && r.path === `/fw/${a.root}` && r.range !== undefined);
  t.is(gets.length, 1, 'one resumed request');
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[0]?.range ?? '')?.[1]);
  t.true(resumedAt > 0 && resumedAt <= 200 * 1024, `resumed at ${resumedAt}`);
  // Bytes that arrived before the cut were not fetched again.
  const sent = server.requests
    .filter((r) => r.method === 'GET' && r.path === `/fw/${a.root}`)
    .reduce((s, r) => s + r.bytesSent, 0);
  t.true(sent < 512 * 1024 + 64 * 1024, `${sent} bytes sent for a 512 KiB file`);
  t.deepEqual(
    [...d.progress].sort((x, y) => x - y),
    d.progress,
    'progress never goes back',
  );
  await artefactsVerify(artefacts, dir, nodeFs);
  t.deepEqual(readFileSync(join(dir, a.root)), a.files.get(a.root));
  t.deepEqual(readFileSync(join(dir, a.uki)), a.files.get(a.uki));
});

test('fetch: the bandwidth limit holds the download to its rate', async (t) => {
  const key = signingKeyMake(t);
  const a = artefactsMake(key, '0.2.0', { rootBytes: 320 * 1024, ukiBytes: 64 * 1024 });
  const server = await serve(t);
  const url = artefactsServe(server, 'fw', a);
  const rate = 128 * 1024;
  const limiter = new RateLimiter({ burst: rate, perSecond: rate });
  let waits = 0;
  const reserve = limiter.reserve.bind(limiter);
  limiter.reserve = (key, cost) => {
    const ms = reserve(key, cost);
    if (ms > 0) waits++;
    return ms;
  };
  const started = performance.now();
  await artefactsFetch(url, manifestOf(a).artefacts, scratchDir(t), deps({ limiter }));
  const elapsed = performance.now() - started;
  // 384 KiB with a 128 KiB burst at 128 KiB/s: at least 2 s (unlimited, it takes milliseconds).
  t.true(elapsed >= 1800, `took ${Math.round(elapsed)} ms`);
  t.true(waits > 0, 'the limiter made the reader wait');
});

test('rate limiter: reserve lets a stream go into debt and says how long to pay it off', (t) => {
  let now = 0;
  const limiter = new RateLimiter({ burst: 1000, perSecond: 1000, now: () => now });
  t.is(limiter.reserve('update', 600), 0);
  t.is(limiter.reserve('update', 900), 500, '500 tokens short at 1000/s');
  now += 500;
  t.is(limiter.reserve('update', 1), 1);
});

test('fetch: no room for the artefacts refuses before the first byte (ERR_UPDATE_SPACE)', async (t) => {
  const key = signingKeyMake(t);
  const a = artefactsMake(key, '0.2.0');
  const server = await serve(t);
  const url = artefactsServe(server, 'fw', a);
  const dir = scratchDir(t);
  // The data partition as statfs reports it: 100 KiB free, for 128 KiB of artefacts.
  const full = deps({ statfs: async () => ({ bavail: 25, bsize: 4096 }) });
  const error = await t.throwsAsync(artefactsFetch(url, manifestOf(a).artefacts, dir, full), {
    instanceOf: UpdateError,
  });
  t.is(error?.code, 'ERR_UPDATE_SPACE');
  t.regex(error?.message ?? '', /needs 131072 more bytes .* has 102400 free; nothing was downloaded/);
  t.deepEqual(
    server.requests.map((r) => r.method),
    ['HEAD', 'HEAD'],
    'only the sizes were asked: no artefact byte was fetched',
  );
});

test('fetch: a server that keeps failing ends with ERR_UPDATE_DOWNLOAD after the retries', async (t) => {
  const key = signingKeyMake(t);
  const a = artefactsMake(key, '0.2.0');
  const server = await serve(t);
  const url = artefactsServe(server, 'fw', a, {
    [a.root]: [
      { kind: 'status', status: 503 },
      { kind: 'status', status: 503 },
      { kind: 'status', status: 503 },
    ],
  });
  const error = await t.throwsAsync(artefactsFetch(url, manifestOf(a).artefacts, scratchDir(t), deps()), {
    instanceOf: UpdateError,
  });
  t.is(error?.code, 'ERR_UPDATE_DOWNLOAD');
  t.regex(error?.message ?? '', /HTTP 503/);
  t.is(server.requests.filter((r) => r.path === `/fw/${a.root}` && r.status === 503).length, 3);
});

test('fetch: SHA256SUMS is fetched again after a server error, as the artefacts are', async (t) => {
  const key = signingKeyMake(t);
  const a = artefactsMake(key, '0.2.0');
  const server = await serve(t);
  const url = artefactsServe(server, 'fw', a, { SHA256SUMS: [{ kind: 'status', status: 503 }] });
  const d = deps();
  const fetched = await withRetries(d, { name: 'SHA256SUMS' }, () =>
    manifestFetch(url, { fetch: globalThis.fetch, timeoutMs: 5000 }),
  );
  t.deepEqual(fetched.text, a.files.get('SHA256SUMS'));
  t.deepEqual(
    server.requests.filter((r) => r.path === '/fw/SHA256SUMS').map((r) => r.status),
    [503, 200],
  );
});

test('fetch: a server that refuses HEAD (a URL signed for GET) tells the size through a one-byte range', async (t) => {
  const key = signingKeyMake(t);
  const a = artefactsMake(key, '0.2.0');
  const methods: string[] = [];
  const server = createServer((req, res) => {
    methods.push(`${req.method} ${req.headers.range ?? ''}`.trim());
    const data = a.files.get(decodeURIComponent((req.url ?? '').split('/').pop() ?? ''));
    if (!data) return void res.writeHead(404).end();
    if (req.method === 'HEAD') return void res.writeHead(403).end();
    const start = Number(/^bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const end = req.headers.range === 'bytes=0-0' ? 0 : data.length - 1;
    res.writeHead(req.headers.range ? 206 : 200, {
      'content-length': end - start + 1,
      ...(req.headers.range ? { 'content-range': `bytes ${start}-${end}/${data.length}` } : {}),
    });
    res.end(data.subarray(start, end + 1));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fw/`;
  const dir = scratchDir(t);
  const fetched = await artefactsFetch(url, manifestOf(a).artefacts, dir, deps());
  t.is(fetched.bytesTotal, 96 * 1024 + 32 * 1024);
  t.true(methods.includes('GET bytes=0-0'));
  await artefactsVerify(manifestOf(a).artefacts, dir, nodeFs);
  t.deepEqual(readFileSync(join(dir, a.uki)), a.files.get(a.uki));
});
