import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { loadAddon } from '../src/native/addon.ts';
import { clipMake, counterClip, lumaMean } from './helpers/clips.ts';
import { until } from './helpers/supervisor.ts';

// The decoder reads this test hook when it opens a source; this file runs in its own process.
process.env.MULTIHEAD_FAULT_HW_AFTER_FRAMES = '20';

const addon = loadAddon();
const dir = mkdtempSync(join(tmpdir(), 'multihead-fallback-'));
// Retried: a decoder thread may still be saving a keyframe index beside a clip (ENOTEMPTY seen under load).
test.after.always(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10 }));

// Frame N has luma 16 + 2N: 30 frames here, 90 (with a keyframe every 12) in `longClip`.
const clip = counterClip(dir, 'counter.mp4', '64x64', '16+2*N');
const longClip = clipMake(dir, 'counter90.mp4', [
  '-f',
  'lavfi',
  '-i',
  "color=c=black:size=64x64:rate=30:duration=3,geq=lum='16+2*N':cb=128:cr=128",
  '-c:v',
  'libx264',
  '-preset',
  'ultrafast',
  '-qp',
  '0',
  '-g',
  '12',
  '-pix_fmt',
  'yuv420p',
]);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('hw auto with no VAAPI device decodes in software and says why', async (t) => {
  // The device is named, not looked for: the same outcome on a machine with a GPU and without.
  const missing = join(dir, 'renderD404');
  const decode = new addon.DecodeManager({});
  decode.setVaapiDevice(missing);
  t.teardown(() => {
    decode.setVaapiDevice(null);
    decode.close();
  });
  decode.acquire('a', { source: clip, hw: 'auto' });
  const d = await until(
    () => decode.status().decoders.find((x) => x.frames > 0),
    'the first frame decoded in software',
    5000,
  );
  t.is(d.path, 'software');
  t.false(d.hw);
  t.is(d.hwFallback, `${missing} does not exist`);
});

test.serial(
  'hardware path fails mid-stream: decoding continues in software from the same position, one reason reported',
  async (t) => {
    const decode = new addon.DecodeManager({});
    const display = new addon.VirtualDisplay([{ name: 'Virtual-1', width: 64, height: 64, refresh: 60 }]);
    t.teardown(() => {
      display.close();
      decode.close();
    });
    // "dmabuf": software decode exported through dma-bufs (memfds where /dev/udmabuf is
    // missing), the hardware path's journey; the hook fails it after 20 frames.
    decode.acquire('main', { source: longClip, hw: 'dmabuf' });
    display.play(decode, 'main', ['Virtual-1']);
    const seen: number[] = [];
    const deadline = Date.now() + 2200;
    while (Date.now() < deadline) {
      const frame = display.snapshot('Virtual-1');
      if (frame) {
        const n = Math.round((lumaMean(frame.data, 64 * 64) - 16) / 2);
        if (seen.at(-1) !== n) seen.push(n);
      }
      await sleep(15);
    }
    const [d] = decode.status().decoders;
    const [stats] = display.stats();
    t.is(d?.path, 'software', 'frames now come from the software decoder');
    t.regex(d?.hwFallback ?? '', /injected hardware failure after 20 frames/);
    t.is(d?.exported, 20, 'the first 20 frames came through dma-bufs');
    t.true((d?.frames ?? 0) > 40, `decoding went on: ${d?.frames} frames`);
    // The picture runs on from where the hardware stopped: never back to the start, no gap.
    const backwards = seen.filter((n, i) => i > 0 && n < (seen[i - 1] ?? 0));
    t.deepEqual(backwards, [], `frame numbers went back: ${seen.join(',')}`);
    t.true(seen.includes(19) && seen.includes(20) && seen.includes(21), `frames around the switch: ${seen.join(',')}`);
    t.true(Math.max(...seen) > 30, `frames after the switch: ${seen.join(',')}`);
    t.is(stats?.dropped, 0, 'no decoded frame was lost at the switch');
  },
);

test('dmabuf export frames reach virtual outputs with the right content', async (t) => {
  delete process.env.MULTIHEAD_FAULT_HW_AFTER_FRAMES;
  const decode = new addon.DecodeManager({});
  const display = new addon.VirtualDisplay([{ name: 'Virtual-1', width: 64, height: 64, refresh: 60 }]);
  t.teardown(() => {
    display.close();
    decode.close();
    process.env.MULTIHEAD_FAULT_HW_AFTER_FRAMES = '20';
  });
  decode.acquire('main', { source: clip, hw: 'dmabuf' });
  display.play(decode, 'main', ['Virtual-1']);
  await sleep(600);
  const [d] = decode.status().decoders;
  t.is(d?.path, 'dmabuf', `${d?.hwFallback}`);
  t.true((d?.exported ?? 0) >= 10, `exported ${d?.exported}`);
  const frame = display.snapshot('Virtual-1');
  t.truthy(frame);
  if (!frame) return;
  const index = (frame.sequence - 1) % 30;
  const luma = lumaMean(frame.data, 64 * 64);
  t.true(Math.abs(luma - (16 + 2 * index)) <= 2, `frame ${index}: luma ${luma}`);
});
