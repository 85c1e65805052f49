import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { downloadAttempt, resumePoint } from '../src/content/download.ts';
import { nodeFs } from '../src/content/fs.ts';
import { fsWithHandles } from './helpers/fs-wrap.ts';
import { mediaServerStart, randomMedia } from './helpers/media-server.ts';
import { scratchDir } from './helpers/tmp.ts';

const STEP = 65_536;

test('resumePoint: one whole step below the length, never below 0', (t) => {
  t.is(resumePoint(0, STEP), 0);
  t.is(resumePoint(STEP - 1, STEP), 0);
  t.is(resumePoint(STEP, STEP), 0);
  t.is(resumePoint(2 * STEP, STEP), STEP);
  t.is(resumePoint(3.5 * STEP, STEP), 2 * STEP);
});

test('a partial left by a power cut, its tail zeros that never reached the disk, resumes below them and comes out whole', async (t) => {
  const server = await mediaServerStart();
  t.teardown(() => server.close());
  const media = randomMedia(10 * STEP);
  server.add('/root.img', media.data);
  const partial = join(scratchDir(t), 'root.img.partial');
  // What ext4 can show after a cut: the size of allocated blocks whose data never landed.
  const kept = Buffer.concat([media.data.subarray(0, 2 * STEP + 1000), Buffer.alloc(STEP + 500)]);
  writeFileSync(partial, kept);

  const result = await downloadAttempt(
    {
      subject: { id: 'root', url: server.url('/root.img') },
      url: server.url('/root.img'),
      size: media.data.length,
      partialPath: partial,
    },
    { fetch: globalThis.fetch, fs: nodeFs, stallMs: 5000, durableStep: STEP },
  );

  t.is(result.resumedFrom, 2 * STEP, 'resumed at the last step proven synced, not at the length on disk');
  t.is(server.requests.at(-1)?.range, `bytes=${2 * STEP}-`);
  t.true(readFileSync(partial).equals(media.data), 'the file is byte for byte what the server has');
});

test('the writer syncs the partial each time it crosses a step, before writing a step further', async (t) => {
  const server = await mediaServerStart();
  t.teardown(() => server.close());
  const size = 40 * STEP;
  const media = randomMedia(size);
  server.add('/big.img', media.data);
  const partial = join(scratchDir(t), 'big.img.partial');
  const syncedAt: number[] = [];
  const fs = fsWithHandles((handle, path) => ({
    async sync() {
      syncedAt.push(statSync(path).size);
      await handle.sync();
    },
  }));
  const step = 8 * STEP;

  await downloadAttempt(
    { subject: { id: 'big', url: server.url('/big.img') }, url: server.url('/big.img'), size, partialPath: partial },
    { fetch: globalThis.fetch, fs, stallMs: 5000, durableStep: step },
  );

  t.true(readFileSync(partial).equals(media.data));
  // Every step boundary crossed is followed by a sync before the file is a step past it.
  for (let k = 1; k * step < size; k++) {
    const sync = syncedAt.find((at) => at >= k * step);
    t.true(sync !== undefined && sync < (k + 1) * step, `step ${k}: synced at ${sync} (all: ${syncedAt.join(', ')})`);
  }
  t.is(syncedAt.at(-1), size, 'the whole file synced at the end');
});

test('a retry after a failure before the first byte resumes where the cut-back partial stands, not a step lower', async (t) => {
  const server = await mediaServerStart();
  t.teardown(() => server.close());
  const media = randomMedia(10 * STEP);
  server.add('/root.img', media.data, [{ kind: 'status', status: 503 }]);
  const partial = join(scratchDir(t), 'root.img.partial');
  writeFileSync(partial, media.data.subarray(0, 3 * STEP + 1000));
  const request = {
    subject: { id: 'root', url: server.url('/root.img') },
    url: server.url('/root.img'),
    size: media.data.length,
    partialPath: partial,
  };
  const deps = { fetch: globalThis.fetch, fs: nodeFs, stallMs: 5000, durableStep: STEP };

  await t.throwsAsync(downloadAttempt(request, deps), { code: 'ERR_CACHE_HTTP' } as never);
  const result = await downloadAttempt(request, deps);

  t.deepEqual(
    server.requests.map((r) => r.range),
    [`bytes=${2 * STEP}-`, `bytes=${2 * STEP}-`],
  );
  t.is(result.resumedFrom, 2 * STEP);
  t.true(readFileSync(partial).equals(media.data));
});
