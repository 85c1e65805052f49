// Layout geometry (fit, fill, stretch, none; rotation; non-square pixels) as the planes and the
// previews take it, and a virtual output's preview composed by the addon from it: a pillarboxed
// picture with bars in the asked colour, read back by node-av's own JPEG decoder.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { layoutPlace, layoutProblem, type Rotation } from '../src/display/layout.ts';
import { virtualScreens } from '../src/display/screens.ts';
import { loadAddon } from '../src/native/addon.ts';
import { counterClip } from './helpers/clips.ts';
import { jpegDecode } from './helpers/jpeg.ts';

const r = (x: number, y: number, width: number, height: number) => ({ x, y, width, height });
const hd = { width: 1280, height: 720 };

test('layout fit: a 4:3 picture is pillarboxed, a 21:9 one letterboxed, both whole', (t) => {
  const four = layoutPlace({ width: 960, height: 720 }, hd, { layout: { fit: 'fit' } });
  t.deepEqual(four.src, r(0, 0, 960, 720));
  t.deepEqual(four.dst, r(160, 0, 960, 720));
  const wide = layoutPlace({ width: 1280, height: 548 }, hd);
  t.deepEqual(wide.dst, r(0, 86, 1280, 548), 'fit is the default');
  t.is(wide.background, '000000');
  const small = layoutPlace({ width: 320, height: 240 }, hd, { layout: { fit: 'fit', anchor: 'left' } });
  t.deepEqual(small.dst, r(0, 0, 960, 720), 'scaled up, anchored left');
});

test('layout fill: the picture covers the output; the anchor says which part stays', (t) => {
  const centred = layoutPlace({ width: 1280, height: 960 }, hd, { layout: { fit: 'fill' } });
  t.deepEqual(centred.src, r(0, 120, 1280, 720));
  t.deepEqual(centred.dst, r(0, 0, 1280, 720));
  const top = layoutPlace({ width: 1280, height: 960 }, hd, { layout: { fit: 'fill', anchor: 'top' } });
  t.deepEqual(top.src, r(0, 0, 1280, 720));
  const wide = layoutPlace({ width: 2560, height: 1096 }, hd, { layout: { fit: 'fill', anchor: 'bottom-right' } });
  t.deepEqual(wide.src, r(2560 - 1948, 0, 1948, 1096));
  t.deepEqual(wide.dst, r(0, 0, 1280, 720));
});

test('layout stretch and none: the whole output, or pixels 1:1 centred and cut where too big', (t) => {
  t.deepEqual(layoutPlace({ width: 640, height: 480 }, hd, { layout: { fit: 'stretch' } }).dst, r(0, 0, 1280, 720));
  const none = layoutPlace({ width: 320, height: 240 }, hd, { layout: { fit: 'none', background: 'ff8800' } });
  t.deepEqual(none.src, r(0, 0, 320, 240));
  t.deepEqual(none.dst, r(480, 240, 320, 240));
  t.is(none.background, 'ff8800');
  const big = layoutPlace({ width: 1920, height: 1080 }, hd, { layout: { fit: 'none' } });
  t.deepEqual(big.src, r(320, 180, 1280, 720));
  t.deepEqual(big.dst, r(0, 0, 1280, 720));
});

test('layout: non-square pixels (PAL 4:3 at 720x576, 16:15) are shown at their display aspect', (t) => {
  const pal = layoutPlace({ width: 720, height: 576, sarNum: 16, sarDen: 15 }, { width: 1920, height: 1080 });
  t.deepEqual(pal.dst, r(240, 0, 1440, 1080));
  const square = layoutPlace({ width: 720, height: 576, sarNum: 0, sarDen: 1 }, { width: 1920, height: 1080 });
  t.deepEqual(square.dst, r(285, 0, 1350, 1080), 'unknown SAR: square pixels');
});

test('layout rotation: fit is computed on the portrait size, and the rectangle turned onto the panel', (t) => {
  const src = { width: 1920, height: 1080 };
  const panel = { width: 1920, height: 1080 };
  // The viewer sees 1080x1920: the picture is 1080x608 at y 656 of it.
  const cw = layoutPlace(src, panel, { rotation: 90 });
  t.is(cw.rotation, 90);
  t.deepEqual(cw.dst, r(656, 0, 608, 1080));
  const ccw = layoutPlace(src, panel, { rotation: 270, layout: { fit: 'fit', anchor: 'top' } });
  // Top of the picture at the viewer's top: the panel's left edge when turned 270.
  t.deepEqual(ccw.dst, r(0, 0, 608, 1080));
  const cwTop = layoutPlace(src, panel, { rotation: 90, layout: { fit: 'fit', anchor: 'top' } });
  t.deepEqual(cwTop.dst, r(1920 - 608, 0, 608, 1080), 'turned clockwise: the viewer’s top is the panel’s right');
  const upside = layoutPlace({ width: 960, height: 720 }, hd, {
    rotation: 180,
    layout: { fit: 'fit', anchor: 'left' },
  });
  t.deepEqual(upside.dst, r(320, 0, 960, 720), 'upside down: left becomes right');
  for (const rotation of [0, 90, 180, 270] as Rotation[]) {
    for (const fit of ['fit', 'fill', 'stretch', 'none'] as const) {
      const p = layoutPlace({ width: 1000, height: 300 }, { width: 800, height: 600 }, { rotation, layout: { fit } });
      t.true(
        p.dst.x >= 0 && p.dst.y >= 0 && p.dst.x + p.dst.width <= 800 && p.dst.y + p.dst.height <= 600,
        `${fit} ${rotation}: ${JSON.stringify(p.dst)}`,
      );
      t.true(p.src.x + p.src.width <= 1000 && p.src.y + p.src.height <= 300, `${fit} ${rotation} src`);
    }
  }
});

test('layout: a wall tile crops first, then the layout applies to the tile', (t) => {
  const tile = layoutPlace({ width: 1920, height: 1080 }, hd, {
    crop: { x: 0.5, y: 0, width: 0.5, height: 0.5 },
    layout: { fit: 'stretch' },
  });
  t.deepEqual(tile.src, r(960, 0, 960, 540));
  t.deepEqual(tile.dst, r(0, 0, 1280, 720));
});

test('layout: a bad layout is refused naming the field', (t) => {
  t.is(layoutProblem({ fit: 'fit' }), undefined);
  t.regex(layoutProblem({ fit: 'zoom' }) ?? '', /fit must be one of fit, fill, stretch, none/);
  t.regex(layoutProblem({ fit: 'fill', anchor: 'middle' }) ?? '', /anchor must be one of/);
  t.regex(layoutProblem({ fit: 'fit', background: '#000' }) ?? '', /background must be a colour as RRGGBB/);
  t.regex(layoutProblem({ fit: 'fit', zoom: 2 }) ?? '', /unknown field "zoom"/);
  t.regex(layoutProblem('fit') ?? '', /is not an object/);
});

test('layout preview: a 4:3 picture on a 16:9 virtual output shows red bars left and right, the picture between', async (t) => {
  const addon = loadAddon();
  const decode = new addon.DecodeManager({});
  const outputs = [{ name: 'Virtual-1', width: 320, height: 180, refresh: 30 }];
  const display = new addon.VirtualDisplay(outputs);
  t.teardown(() => {
    display.close();
    decode.close();
  });
  const screens = virtualScreens(display, outputs);
  // A light grey 4:3 picture.
  decode.acquire('grey', { source: 'lavfi:color=c=0xc0c0c0:size=160x120:rate=30' });
  const deadline = Date.now() + 20_000;
  while (!decode.status().decoders.some((d) => d.consumers.includes('grey') && d.width > 0 && d.frames > 0)) {
    if (Date.now() > deadline) throw new Error('the lavfi source showed no frame within 20 s');
    await new Promise((res) => setTimeout(res, 20));
  }
  screens.play(decode, 'grey', [{ output: 'Virtual-1', layout: { fit: 'fit', background: 'ff0000' } }]);
  t.deepEqual(screens.placed?.('Virtual-1')?.dst, r(40, 0, 240, 180));
  let shot = await screens.snapshotJpeg('Virtual-1');
  while (!shot) {
    if (Date.now() > deadline) throw new Error('no preview within 20 s');
    await new Promise((res) => setTimeout(res, 20));
    shot = await screens.snapshotJpeg('Virtual-1');
  }
  t.deepEqual(
    { width: shot.width, height: shot.height },
    { width: 320, height: 180 },
    'the output’s size, not the picture’s',
  );
  const p = await jpegDecode(shot.jpeg);
  // Red in full-range BT.601: Y 76, Cb 85, Cr 255; grey 0xc0: Y 192, Cb = Cr = 128.
  for (const [x, y] of [
    [10, 90],
    [310, 90],
    [20, 10],
  ] as const) {
    const [yy, cb, cr] = p.at(x, y);
    t.true(Math.abs(yy - 76) <= 6 && Math.abs(cb - 85) <= 8 && cr >= 240, `bar at ${x},${y}: ${yy} ${cb} ${cr}`);
  }
  for (const [x, y] of [
    [60, 20],
    [160, 90],
    [260, 170],
  ] as const) {
    const [yy, cb, cr] = p.at(x, y);
    t.true(
      Math.abs(yy - 192) <= 6 && Math.abs(cb - 128) <= 6 && Math.abs(cr - 128) <= 6,
      `picture at ${x},${y}: ${yy} ${cb} ${cr}`,
    );
  }
});

test('layout: the rotation from the outputs setting applies unless the content gives its own (0 included)', async (t) => {
  const addon = loadAddon();
  const decode = new addon.DecodeManager({});
  const outputs = [
    { name: 'Virtual-1', width: 320, height: 180, refresh: 30 },
    { name: 'Virtual-2', width: 320, height: 180, refresh: 30 },
  ];
  const display = new addon.VirtualDisplay(outputs);
  t.teardown(() => {
    display.close();
    decode.close();
  });
  const screens = virtualScreens(display, outputs, (o) => (o === 'Virtual-1' || o === 'Virtual-2' ? 90 : 0));
  decode.acquire('grey', { source: 'lavfi:color=c=0xc0c0c0:size=160x90:rate=30' });
  const deadline = Date.now() + 20_000;
  while (!decode.status().decoders.some((d) => d.consumers.includes('grey') && d.width > 0)) {
    if (Date.now() > deadline) throw new Error('the lavfi source did not open within 20 s');
    await new Promise((res) => setTimeout(res, 20));
  }
  screens.play(decode, 'grey', [{ output: 'Virtual-1' }, { output: 'Virtual-2', rotation: 0 }]);
  const turned = screens.placed?.('Virtual-1');
  t.is(turned?.rotation, 90);
  // 16:9 on a panel turned to portrait (viewer 180x320): 180x101 in the middle, sideways on the panel.
  t.deepEqual(turned?.dst, r(109, 0, 101, 180));
  t.is(screens.placed?.('Virtual-2')?.rotation, 0, 'the content’s 0 wins over the setting');
});

test('layout: a phone video stored sideways is turned upright, then fitted or filled as the viewer sees it', (t) => {
  // Stored 1920x1080, to be turned 90 degrees clockwise: a portrait 1080x1920 picture.
  const phone = { width: 1920, height: 1080, rotation: 90 };
  const fit = layoutPlace(phone, { width: 1920, height: 1080 });
  t.is(fit.rotation, 90);
  t.deepEqual(fit.src, r(0, 0, 1920, 1080));
  t.deepEqual(fit.dst, r(656, 0, 608, 1080), 'a portrait picture pillarboxed on a landscape screen');
  // Filled, top kept: the upright picture's top is the stored frame's left edge.
  const top = layoutPlace(phone, { width: 1920, height: 1080 }, { layout: { fit: 'fill', anchor: 'top' } });
  t.deepEqual(top.src, r(0, 0, 608, 1080));
  t.deepEqual(top.dst, r(0, 0, 1920, 1080));
  const bottom = layoutPlace(phone, { width: 1920, height: 1080 }, { layout: { fit: 'fill', anchor: 'bottom' } });
  t.deepEqual(bottom.src, r(1920 - 608, 0, 608, 1080));
  // On a portrait screen (turned 90 itself) the portrait picture fills it exactly: turns add up.
  const both = layoutPlace(phone, { width: 1920, height: 1080 }, { rotation: 270 });
  t.is(both.rotation, 0);
  t.deepEqual(both.dst, r(0, 0, 1920, 1080));
});

test('layout: the decoder reads a stream’s display matrix (a portrait phone clip) and the preview turns it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'multihead-rotate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A 64x36 clip whose left half is white, to be shown turned 90 degrees clockwise.
  const clip = counterClip(dir, 'phone.mp4', '64x36', 'if(lt(X,32),235,16)');
  // The track header's matrix made a phone's portrait one, as a camera writes it (FFmpeg 5.1's
  // muxer has no option for it): the last identity matrix in the file is the video track's.
  const identity = Buffer.from('000100000000000000000000000000000001000000000000000000000000000040000000', 'hex');
  const turned = Buffer.from('0000000000010000000000000000ffff0000000000000000000000000000000040000000', 'hex');
  const bytes = readFileSync(clip);
  const at = bytes.lastIndexOf(identity);
  if (at < 0) throw new Error('no track matrix found in the clip');
  turned.copy(bytes, at);
  writeFileSync(clip, bytes);
  const addon = loadAddon();
  const decode = new addon.DecodeManager({});
  const outputs = [{ name: 'Virtual-1', width: 64, height: 64, refresh: 30 }];
  const display = new addon.VirtualDisplay(outputs);
  t.teardown(() => {
    display.close();
    decode.close();
  });
  decode.acquire('phone', { source: clip });
  const deadline = Date.now() + 20_000;
  while (!decode.status().decoders.some((d) => d.consumers.includes('phone') && d.width > 0 && d.frames > 0)) {
    if (Date.now() > deadline) throw new Error('the clip did not open within 20 s');
    await new Promise((res) => setTimeout(res, 20));
  }
  t.is(decode.status().decoders.find((d) => d.consumers.includes('phone'))?.rotation, 90);
  const screens = virtualScreens(display, outputs);
  screens.play(decode, 'phone', [{ output: 'Virtual-1' }]);
  // Upright it is 36x64: fitted to the 64x64 output, 36 wide in the middle.
  t.deepEqual(screens.placed?.('Virtual-1')?.dst, r(14, 0, 36, 64));
  let shot = await screens.snapshotJpeg('Virtual-1');
  while (!shot) {
    if (Date.now() > deadline) throw new Error('no preview within 20 s');
    await new Promise((res) => setTimeout(res, 20));
    shot = await screens.snapshotJpeg('Virtual-1');
  }
  const p = await jpegDecode(shot.jpeg);
  // The stored left half (white) is the upright picture's top.
  t.true(p.at(32, 8)[0] > 200, `top ${p.at(32, 8)[0]}`);
  t.true(p.at(32, 56)[0] < 50, `bottom ${p.at(32, 56)[0]}`);
  t.true(p.at(4, 32)[0] < 30, `bar ${p.at(4, 32)[0]}`);
});
