// Preview JPEGs from the addon (Debian's FFmpeg: swscale + MJPEG), read back by node-av (its own
// FFmpeg build, in process): what a browser or dashboard sees, checked by a decoder that is not
// the code under test.
import test from 'ava';
import { loadAddon } from '../src/native/addon.ts';
import { jpegDecode } from './helpers/jpeg.ts';

/** The JPEG decoded: its size and its luma plane, rows packed (full range, as JPEG stores it). */
async function jpegLuma(jpeg: Buffer): Promise<{ width: number; height: number; luma: Buffer }> {
  const d = await jpegDecode(jpeg);
  return { width: d.width, height: d.height, luma: d.planes[0] };
}

const mean = (b: Buffer, from = 0, to = b.length): number => {
  let sum = 0;
  for (let i = from; i < to; i++) sum += b[i] ?? 0;
  return sum / (to - from);
};

test('jpeg: an NV12 frame keeps its picture (top dark, bottom light) at the asked width', async (t) => {
  const [w, h] = [64, 36];
  const data = new Uint8Array(w * h * 1.5);
  // Limited-range luma 40 above, 200 below; neutral chroma.
  data.fill(40, 0, (w * h) / 2);
  data.fill(200, (w * h) / 2, w * h);
  data.fill(128, w * h);
  const p = await loadAddon().jpegEncode(data, { width: w, height: h, format: 'NV12', outWidth: 32 });
  t.deepEqual({ width: p.width, height: p.height }, { width: 32, height: 18 });
  const d = await jpegLuma(p.jpeg);
  t.deepEqual({ width: d.width, height: d.height }, { width: 32, height: 18 });
  // Full range in the JPEG: (40-16)*255/219 = 28, (200-16)*255/219 = 214.
  const top = mean(d.luma, 0, 32 * 6);
  const bottom = mean(d.luma, 32 * 12, 32 * 18);
  t.true(Math.abs(top - 28) <= 3, `top luma ${top}`);
  t.true(Math.abs(bottom - 214) <= 3, `bottom luma ${bottom}`);
});

test('jpeg: an XR24 frame is read as B, G, R, X', async (t) => {
  const [w, h] = [32, 16];
  const data = new Uint8Array(w * h * 4);
  for (let i = 0; i < w * h; i++) data.set([0, 0, 255, 0], i * 4); // pure red
  const p = await loadAddon().jpegEncode(data, { width: w, height: h, format: 'XR24' });
  const d = await jpegLuma(p.jpeg);
  t.deepEqual({ width: d.width, height: d.height }, { width: 32, height: 16 });
  // BT.601 full-range luma of red: 0.299 * 255 = 76 (blue would read 29).
  const luma = mean(d.luma);
  t.true(Math.abs(luma - 76) <= 3, `luma ${luma}`);
});

test('jpeg: bad arguments are refused with what was wrong', async (t) => {
  const { jpegEncode } = loadAddon();
  const nv12 = new Uint8Array(64 * 36 * 1.5);
  t.throws(() => jpegEncode(nv12.subarray(1), { width: 64, height: 36, format: 'NV12' }), {
    message: 'ERR_JPEG_BAD_ARGUMENT: NV12 64x36 needs 3456 bytes, got 3455',
  });
  t.throws(() => jpegEncode(nv12, { width: 64, height: 36, format: 'YUYV' }), {
    message: /^ERR_JPEG_BAD_ARGUMENT: format "YUYV"/,
  });
  t.throws(() => jpegEncode(nv12, { width: 64, height: 36, format: 'NV12', quality: 101 }), {
    message: /quality 101 is outside 1\.\.100/,
  });
  t.throws(() => jpegEncode(new Uint8Array(0), { width: 0, height: 0, format: 'XR24' }), {
    message: /frame size 0x0/,
  });
});

test('jpeg: a virtual output’s snapshot is what it shows; null before its first frame; unknown outputs named', async (t) => {
  const addon = loadAddon();
  const decode = new addon.DecodeManager({});
  const display = new addon.VirtualDisplay([
    { name: 'Virtual-1', width: 64, height: 36, refresh: 60 },
    { name: 'Virtual-2', width: 64, height: 36, refresh: 60 },
  ]);
  t.teardown(() => {
    display.close();
    decode.close();
  });
  t.is(await display.snapshotJpeg('Virtual-1', {}), null, 'nothing shown yet');
  t.throws(() => display.snapshotJpeg('HDMI-A-9', {}), { message: /no virtual output HDMI-A-9/ });
  // Dark grey on one output, near white on the other: each snapshot is its own output's.
  decode.acquire('dark', { source: 'lavfi:color=c=0x202020:size=64x36:rate=30' });
  decode.acquire('light', { source: 'lavfi:color=c=0xe0e0e0:size=64x36:rate=30' });
  display.play(decode, 'dark', ['Virtual-1']);
  display.play(decode, 'light', ['Virtual-2']);
  const deadline = Date.now() + 20_000;
  let shots: Array<{ jpeg: Buffer; width: number; height: number } | null> = [null, null];
  while (shots.some((s) => s === null) && Date.now() < deadline) {
    shots = await Promise.all(['Virtual-1', 'Virtual-2'].map((o) => display.snapshotJpeg(o, { outWidth: 32 })));
    await new Promise((r) => setTimeout(r, 50));
  }
  const [dark, light] = shots;
  if (!dark || !light) throw new Error('no frame on both outputs within 20 s');
  t.deepEqual({ width: dark.width, height: dark.height }, { width: 32, height: 18 });
  const [d, l] = [await jpegLuma(dark.jpeg), await jpegLuma(light.jpeg)];
  // 0x20 and 0xe0 grey: luma 32 and 224 in full range, whatever the limited-range trip between.
  t.true(Math.abs(mean(d.luma) - 32) <= 4, `dark output luma ${mean(d.luma)}`);
  t.true(Math.abs(mean(l.luma) - 224) <= 4, `light output luma ${mean(l.luma)}`);
});
