// The KMS engine's cases on a real kernel. Each case drives the engine in the guest through
// the kms-server and checks what the heads really show: QMP screendumps on virtio-gpu, the
// writeback connector on vkms. A case throws to fail; its return value is the detail line.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ConnectorInfo, OutputInfo, OutputStats, PlaneInfo } from '../../native/index.d.ts';
import { layoutPlace } from '../../src/display/layout.ts';
import { clipMake, clipMatrix, frameRead, type Matrix, stepForward } from './clips.ts';
import { KmsCallError, type KmsClient, kmsClientStart } from './kms-client.ts';
import {
  comparisonText,
  type Image,
  imageCompare,
  type Pattern,
  patternRgb,
  type Region,
  type Rgb,
  xr24ToImage,
} from './pattern.ts';
import type { Vm } from './qemu.ts';

export interface CaseContext {
  vm: Vm;
  kms: KmsClient;
  repo: string;
  /** Where screendumps and captures of failures are kept (test-results/vm). */
  artefacts: string;
}

export interface VmCase {
  id: string;
  title: string;
  run(ctx: CaseContext): Promise<string>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type FlipRecord = { count: number; lastSequence: number; maxStep: number; late: number; lateOne: number };

async function outputsAll(kms: KmsClient): Promise<OutputInfo[]> {
  await kms.call('open', { path: 'auto' });
  const connectors = await kms.call<ConnectorInfo[]>('connectors');
  const wanted = connectors.filter((c) => c.connected && !c.writeback).map((c) => ({ connector: c.name }));
  return await kms.call<OutputInfo[]>('configure', { outputs: wanted });
}

/** Waits until every named output has completed `atLeast` flips since the last reset. */
async function flipsAwait(kms: KmsClient, connectors: string[], atLeast = 1, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const flips = await kms.call<Record<string, FlipRecord>>('flips');
    if (connectors.every((c) => (flips[c]?.count ?? 0) >= atLeast)) return;
    if (Date.now() > deadline) throw new Error(`flips not seen in ${timeoutMs} ms: ${JSON.stringify(flips)}`);
    await sleep(50);
  }
}

/** virtio-gpu names its heads Virtual-1..N; QMP numbers them from 0. */
const headOf = (connector: string): number => Number(/Virtual-(\d+)/.exec(connector)?.[1] ?? 0) - 1;

async function screendumpCheck(
  ctx: CaseContext,
  label: string,
  connector: string,
  want: (x: number, y: number) => Rgb,
  tolerance = 2,
): Promise<string> {
  // The host side of virtio-gpu updates its surface when the guest's flush lands, a moment
  // after the flip event: retry briefly before calling it a mismatch.
  let last = '';
  for (let attempt = 0; attempt < 10; attempt++) {
    const image = await ctx.vm.screendump(headOf(connector));
    const c = imageCompare(image, want, { tolerance });
    if (c.mismatched === 0) return `${connector} ${comparisonText(c)}`;
    last = comparisonText(c);
    if (attempt === 9) imageSave(ctx, `${label}-${connector}`, image);
    await sleep(200);
  }
  throw new Error(`${label}: ${connector} shows the wrong image: ${last}`);
}

function imageSave(ctx: CaseContext, name: string, image: Image): void {
  fs.mkdirSync(ctx.artefacts, { recursive: true });
  const header = Buffer.from(`P6\n${image.width} ${image.height}\n255\n`, 'latin1');
  fs.writeFileSync(path.join(ctx.artefacts, `${name}.ppm`), Buffer.concat([header, image.rgb]));
}

async function writebackCapture(ctx: CaseContext, connector: string): Promise<Image> {
  const file = path.join(ctx.vm.scratch, `capture-${connector}-${Date.now()}.xr24`);
  const frame = await ctx.kms.call<{ width: number; height: number; pitch: number }>('capture', { connector, file });
  const data = fs.readFileSync(file);
  fs.rmSync(file, { force: true });
  return xr24ToImage(data, frame.width, frame.height, frame.pitch);
}

function regionCheck(
  ctx: CaseContext,
  label: string,
  image: Image,
  region: Region,
  want: (x: number, y: number) => Rgb,
  tolerance: number,
): string {
  const c = imageCompare(image, want, { region, tolerance });
  if (c.mismatched > 0) {
    imageSave(ctx, label, image);
    throw new Error(`${label}: ${comparisonText(c)}`);
  }
  return `${label} ${c.checked} px ok (worst ${c.worst})`;
}

async function expectError(promise: Promise<unknown>, code: string): Promise<KmsCallError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof KmsCallError && e.code === code) return e;
    throw new Error(`expected ${code}, got ${(e as Error).message}`);
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}

/**
 * Flip timing, from two sides: the kernel's vblank sequence numbers (a flip two vblanks after
 * the previous one is late by one, more than two is later) and the engine's own commit delay
 * (flip timestamp to the commit of the next frame, late when over one refresh period). The
 * vblank steps are counted here from the flip events' kernel sequence numbers (`f`) and must
 * agree with the engine's OutputStats, so `lateOne` is the kernel's count, not the engine's word.
 *
 * Budgets: under TCG the guest's CPUs are host threads, and this machine's 2 cores are
 * shared (other builds, other VMs). Seen per 300 flips on vkms with the host's load average
 * at 6 and at 12: lateOne 5 and 19, lateMore 8 and 5, lateCommits 7 and 14; once 20 of 300
 * late while the same machine compiled, and once (load ~12, two VMs and a cargo build) 73
 * late commits with a 2.5 s stall. virtio-gpu (3 heads, load ~9): lateOne 1 per head, 0 late
 * commits; with QEMU tracing SET_SCANOUT or taking screendumps during the loop, 33-34 late
 * commits, so the timed loops run with neither. So each may be 10 % of the flips: an engine that paced
 * frames through JavaScript, blocked, or committed every other vblank (50 % late by one)
 * fails; ordinary TCG jitter does not, a host starved for seconds can. Timing targets
 * proper belong to real hardware and bench/, not to this emulated test.
 */
function flipTimingCheck(connector: string, s: OutputStats, f: FlipRecord): string {
  const budget = Math.floor(f.count / 10);
  assert.ok(
    s.lateCommits <= budget,
    `${connector}: the engine committed ${s.lateCommits} of ${f.count} frames late (max ${s.maxCommitDelayUs} µs)`,
  );
  assert.ok(f.late <= budget, `${connector}: ${f.late} of ${f.count} flips more than one vblank late`);
  assert.ok(f.lateOne <= budget, `${connector}: ${f.lateOne} of ${f.count} flips one vblank late`);
  // The engine measures its loop's first flip against the flip before the loop; the events
  // here start with the loop. Past that one, its counters must be the kernel's.
  const extra = s.lateOne + s.lateMore - (f.lateOne + f.late);
  assert.ok(
    extra === 0 || extra === 1,
    `${connector}: the engine counted ${s.lateOne} late by one and ${s.lateMore} later, the kernel's sequence numbers ${f.lateOne} and ${f.late}`,
  );
  return `late by one ${f.lateOne}, later ${f.late} (kernel sequences; engine ${s.lateOne}/${s.lateMore}), max vblank step ${f.maxStep}, commit delay max ${(s.maxCommitDelayUs / 1000).toFixed(1)} ms (${s.lateCommits} late)`;
}

/** What an output's counters gained between two stats() calls (maxima are kept as they are). */
function statsSince(before: OutputStats[], after: OutputStats[], connector: string): OutputStats {
  const a = after.find((x) => x.connector === connector);
  assert.ok(a, `${connector} has stats`);
  const b = before.find((x) => x.connector === connector);
  if (!b) return a;
  return {
    ...a,
    flips: a.flips - b.flips,
    commits: a.commits - b.commits,
    dropped: a.dropped - b.dropped,
    lateOne: a.lateOne - b.lateOne,
    lateMore: a.lateMore - b.lateMore,
    converted: a.converted - b.converted,
    lateCommits: a.lateCommits - b.lateCommits,
  };
}

// ---------------------------------------------------------------- virtio-gpu, 3 heads

export const virtioCases: VmCase[] = [
  {
    id: 'enumerate',
    title: 'enumerate connectors, modes, EDID, CRTCs and planes',
    async run({ kms }) {
      const opened = await kms.call<{ driver: string }>('open', { path: 'auto' });
      assert.equal(opened.driver, 'virtio_gpu');
      const connectors = await kms.call<ConnectorInfo[]>('connectors');
      const names = connectors.map((c) => c.name);
      assert.deepEqual(names, ['Virtual-1', 'Virtual-2', 'Virtual-3']);
      for (const c of connectors) {
        assert.ok(c.connected, `${c.name} connected`);
        assert.ok(
          c.modes.some((m) => m.width === 1024 && m.height === 768),
          `${c.name} offers 1024x768 (video= argument)`,
        );
      }
      const planes = await kms.call<PlaneInfo[]>('planes');
      const primaries = planes.filter((p) => p.kind === 'primary');
      assert.equal(primaries.length, 3, 'one primary plane per CRTC');
      assert.ok(
        primaries.every((p) => p.formats.includes('XR24')),
        'primaries take XR24',
      );
      const crtcs = await kms.call<Array<{ id: number }>>('crtcs');
      assert.equal(crtcs.length, 3);
      const monitor = connectors[0]?.monitor;
      return `virtio_gpu: ${names.join(', ')}; ${crtcs.length} CRTCs, ${planes.length} planes (${planes
        .map((p) => p.kind)
        .join('/')}); EDID ${monitor ? `${monitor.manufacturer} "${monitor.name ?? ''}"` : 'none'}`;
    },
  },
  {
    id: 'distinct-heads',
    title: 'a distinct pattern on each of 3 heads',
    async run(ctx) {
      const { kms } = ctx;
      const outputs = await outputsAll(kms);
      assert.equal(outputs.length, 3);
      // "preferred" honours the kernel's video= mode over the EDID's preference.
      assert.deepEqual(
        outputs.map((o) => o.mode.name),
        ['1024x768@60', '1024x768@60', '1024x768@60'],
      );
      await kms.call('flipsReset');
      const scene = [];
      for (const [i, o] of outputs.entries()) {
        const pattern: Pattern = { kind: 'gradient', seed: i + 1 };
        const buffer = await kms.call<number>('createBuffer', {
          width: o.mode.width,
          height: o.mode.height,
          format: 'XR24',
          pattern,
        });
        scene.push({ connector: o.connector, layers: [{ buffer }] });
      }
      assert.equal(await kms.call('present', { scene }), 'committed');
      await flipsAwait(
        kms,
        outputs.map((o) => o.connector),
      );
      const lines = [];
      for (const [i, o] of outputs.entries()) {
        const pattern: Pattern = { kind: 'gradient', seed: i + 1 };
        lines.push(await screendumpCheck(ctx, 'distinct', o.connector, (x, y) => patternRgb(pattern, x, y)));
      }
      return lines.join('; ');
    },
  },
  {
    id: 'one-fb-three-heads',
    title: 'one framebuffer on all 3 heads in one commit',
    async run(ctx) {
      const { kms } = ctx;
      const outputs = await outputsAll(kms);
      const first = outputs[0];
      assert.ok(first);
      const before = await kms.call<number>('bufferCount');
      const pattern: Pattern = { kind: 'blocks', seed: 3 };
      const buffer = await kms.call<number>('createBuffer', {
        width: first.mode.width,
        height: first.mode.height,
        format: 'XR24',
        pattern,
      });
      const statsBefore = await kms.call<OutputStats[]>('stats');
      await kms.call('flipsReset');
      const scene = outputs.map((o) => ({ connector: o.connector, layers: [{ buffer }] }));
      assert.equal(await kms.call('present', { scene }), 'committed');
      await flipsAwait(
        kms,
        outputs.map((o) => o.connector),
      );
      const statsAfter = await kms.call<OutputStats[]>('stats');
      for (const s of statsAfter) {
        const prior = statsBefore.find((b) => b.connector === s.connector);
        assert.equal(s.commits - (prior?.commits ?? 0), 1, `${s.connector}: exactly one commit`);
      }
      assert.equal(await kms.call('bufferCount'), before + 1, 'one buffer for three heads');
      const lines = [];
      for (const o of outputs) {
        lines.push(await screendumpCheck(ctx, 'shared', o.connector, (x, y) => patternRgb(pattern, x, y)));
      }
      // Released while on screen: it must survive until the heads flip away from it.
      assert.equal(await kms.call('release', { buffer }), false, 'not freed while on screen');
      return `buffer ${buffer} on ${outputs.length} heads in 1 commit; ${lines.join('; ')}`;
    },
  },
  {
    id: 'crop-video-wall',
    title: 'crop rectangles: a 3x1 video wall from one 3072x768 framebuffer',
    async run(ctx) {
      const { kms } = ctx;
      const outputs = await outputsAll(kms);
      const w = outputs[0]?.mode.width ?? 0;
      const h = outputs[0]?.mode.height ?? 0;
      const pattern: Pattern = { kind: 'gradient', seed: 7 };
      const buffer = await kms.call<number>('createBuffer', { width: w * 3, height: h, format: 'XR24', pattern });
      await kms.call('flipsReset');
      const scene = outputs.map((o, i) => ({
        connector: o.connector,
        layers: [{ buffer, src: { x: i * w, y: 0, width: w, height: h } }],
      }));
      assert.equal(await kms.call('present', { scene }), 'committed');
      await flipsAwait(
        kms,
        outputs.map((o) => o.connector),
      );
      const lines = [];
      for (const [i, o] of outputs.entries()) {
        lines.push(await screendumpCheck(ctx, 'wall', o.connector, (x, y) => patternRgb(pattern, x + i * w, y)));
      }
      return lines.join('; ');
    },
  },
  {
    id: 'nv12-fallback',
    title: 'NV12 on XR24-only planes: one converted copy shared by 3 heads, reported once',
    async run(ctx) {
      const { kms } = ctx;
      const outputs = await outputsAll(kms);
      const first = outputs[0];
      assert.ok(first);
      const { width, height } = first.mode;
      const pattern: Pattern = { kind: 'blocks', seed: 4 };
      const source = await kms.call<number>('createBuffer', { width, height, format: 'NV12', pattern });
      const before = await kms.call<number>('bufferCount');
      await kms.call('flipsReset');
      // The test image is BT.601 limited; a 768-line frame would otherwise default to BT.709.
      const layer = { buffer: source, colorEncoding: 'bt601', colorRange: 'limited' };
      const scene = outputs.map((o) => ({ connector: o.connector, layers: [layer] }));
      assert.equal(await kms.call('present', { scene }), 'committed');
      await flipsAwait(
        kms,
        outputs.map((o) => o.connector),
      );
      const counters = await kms.call<{ conversions: number; bytesCopied: number }>('copyCounters');
      assert.equal(counters.conversions, 1, 'converted once for all heads');
      assert.equal(counters.bytesCopied, width * height * 4);
      assert.equal(await kms.call('bufferCount'), before + 1, 'one shared copy');
      const fallbacks = await kms.call<Array<{ connector: string; format: string; message: string }>>('fallbacks');
      assert.equal(fallbacks.length, 1, 'reported once, not per output');
      assert.equal(fallbacks[0]?.format, 'NV12');
      const lines = [];
      for (const o of outputs) {
        lines.push(await screendumpCheck(ctx, 'nv12', o.connector, (x, y) => patternRgb(pattern, x, y), 6));
      }
      const stats = await kms.call<OutputStats[]>('stats');
      assert.ok(stats.every((s) => s.converted === 1));
      return `"${fallbacks[0]?.message}"; ${counters.bytesCopied} bytes copied once; ${lines.join('; ')}`;
    },
  },
  {
    id: 'scaled-copy-fit',
    title:
      'a layout that needs scaling on planes that cannot scale: one CPU-scaled copy per frame, picture and bars right',
    async run(ctx) {
      const { kms } = ctx;
      const outputs = await outputsAll(kms);
      const o = outputs[0] as OutputInfo;
      // A 16:9 picture fitted to the 4:3 head: scaled by 3.2 and letterboxed, which
      // virtio-gpu's primary (XR24, no scaling, no positioning) cannot do itself.
      const [w, h] = [320, 180];
      const pattern: Pattern = { kind: 'blocks', seed: 5 };
      const source = await kms.call<number>('createBuffer', { width: w, height: h, format: 'NV12', pattern });
      const at = layoutPlace({ width: w, height: h }, o.mode, { layout: { fit: 'fit' } });
      const { dst } = at;
      assert.deepEqual(dst, { x: 0, y: 96, width: 1024, height: 576 }, 'the geometry of a 16:9 fit on 1024x768');
      const before = await kms.call<{ conversions: number; scaled: number }>('copyCounters');
      await kms.call('flipsReset');
      const layer = { buffer: source, src: at.src, dst, colorEncoding: 'bt601', colorRange: 'limited' };
      assert.equal(await kms.call('present', { scene: [{ connector: o.connector, layers: [layer] }] }), 'committed');
      await flipsAwait(kms, [o.connector]);
      const after = await kms.call<{ conversions: number; scaled: number }>('copyCounters');
      assert.equal(after.scaled - before.scaled, 1, 'one scaled conversion for the frame');
      // Nearest neighbour, as the engine samples: output pixel (x, y) shows source (x*w/W, y*h/H).
      const want = (x: number, y: number): Rgb =>
        y < dst.y || y >= dst.y + dst.height
          ? [0, 0, 0]
          : patternRgb(pattern, Math.floor((x * w) / dst.width), Math.floor(((y - dst.y) * h) / dst.height));
      const line = await screendumpCheck(ctx, 'scaled', o.connector, want, 6);
      // Presented again, the unchanged frame is not converted again.
      await kms.call('flipsReset');
      assert.equal(await kms.call('present', { scene: [{ connector: o.connector, layers: [layer] }] }), 'committed');
      await flipsAwait(kms, [o.connector]);
      const again = await kms.call<{ conversions: number; scaled: number }>('copyCounters');
      assert.equal(again.conversions - after.conversions, 0, 'the unchanged frame is not converted again');

      // A portrait screen: the same picture turned 90° clockwise and fitted, which the plane
      // cannot turn either: the scaled copy turns it. Output pixel (u, v) of the destination
      // shows source pixel (v * w / H, (W - 1 - u) * h / W): the source's top-left corner lands
      // at the destination's top-right.
      const turned = layoutPlace({ width: w, height: h }, o.mode, { layout: { fit: 'fit' }, rotation: 90 });
      const td = turned.dst;
      assert.equal(turned.rotation, 90);
      assert.deepEqual(td, { x: 296, y: 0, width: 432, height: 768 }, 'the geometry of a turned 16:9 fit on 1024x768');
      await kms.call('flipsReset');
      const turnedLayer = { ...layer, src: turned.src, dst: td, rotation: 90 };
      assert.equal(
        await kms.call('present', { scene: [{ connector: o.connector, layers: [turnedLayer] }] }),
        'committed',
      );
      await flipsAwait(kms, [o.connector]);
      const wantTurned = (x: number, y: number): Rgb => {
        if (x < td.x || x >= td.x + td.width) return [0, 0, 0];
        const [u, v] = [x - td.x, y - td.y];
        return patternRgb(pattern, Math.floor((v * w) / td.height), Math.floor(((td.width - 1 - u) * h) / td.width));
      };
      const turnedLine = await screendumpCheck(ctx, 'turned', o.connector, wantTurned, 6);
      return `16:9 ${w}x${h} fitted to ${o.mode.width}x${o.mode.height}: ${line}; ${after.scaled - before.scaled} scaled conversion; turned 90°: ${turnedLine}`;
    },
  },
  {
    id: 'refusals',
    title: 'a refused mode and a refused commit give the documented errors',
    async run(ctx) {
      const { kms } = ctx;
      const outputs = await outputsAll(kms);
      const o = outputs[0];
      assert.ok(o);
      const shown: Pattern = { kind: 'solid', rgb: [200, 100, 50] };
      const buffer = await kms.call<number>('createBuffer', {
        width: o.mode.width,
        height: o.mode.height,
        format: 'XR24',
        pattern: shown,
      });
      await kms.call('flipsReset');
      await kms.call('present', { scene: [{ connector: o.connector, layers: [{ buffer }] }] });
      await flipsAwait(kms, [o.connector]);

      const mode = await expectError(
        kms.call('configure', { outputs: [{ connector: o.connector, mode: '7680x4320@60' }] }),
        'ERR_KMS_MODE_NOT_FOUND',
      );
      assert.match(mode.message, new RegExp(`connector ${o.connector}: mode 7680x4320@60 not offered; available: `));
      const missing = await expectError(
        kms.call('configure', { outputs: [{ connector: 'HDMI-A-9' }] }),
        'ERR_KMS_CONNECTOR_NOT_FOUND',
      );
      assert.match(missing.message, /connector HDMI-A-9 not found; available: Virtual-1/);
      // virtio-gpu's primary planes cannot scale: TEST_ONLY refuses, and the error names the
      // output and the properties that were asked for.
      const scaled = await expectError(
        kms.call('present', {
          scene: [
            {
              connector: o.connector,
              layers: [{ buffer, src: { x: 0, y: 0, width: o.mode.width / 2, height: o.mode.height / 2 } }],
            },
          ],
        }),
        'ERR_KMS_COMMIT_REFUSED',
      );
      assert.match(scaled.message, new RegExp(`atomic commit for ${o.connector} refused`));
      assert.match(scaled.message, /SRC_W=/);
      // Nothing reached the screen: the head still shows what it showed.
      const still = await screendumpCheck(ctx, 'refused', o.connector, () => shown.rgb);
      return `mode: "${mode.message.slice(0, 90)}..."; commit: "${scaled.message.slice(0, 70)}..."; ${still}`;
    },
  },
  {
    id: 'flip-loop-300',
    title:
      "a flip loop of 300 frames on 3 heads: a new buffer every frame in cycle order (the device's SET_SCANOUTs), whole stamped frames on screen, vblank timing",
    async run(ctx) {
      const { kms, vm } = ctx;
      const outputs = await outputsAll(kms);
      const loopOutputs: Array<{ connector: string; buffers: number[] }> = [];
      for (const [i, o] of outputs.entries()) {
        const buffers: number[] = [];
        for (let b = 0; b < 3; b++) {
          buffers.push(
            await kms.call<number>('createBuffer', {
              width: o.mode.width,
              height: o.mode.height,
              format: 'XR24',
              // Head and buffer in the stamp: a head showing another head's buffer is caught too.
              pattern: { kind: 'stamp', number: 16 * i + b, width: o.mode.width, height: o.mode.height },
            }),
          );
        }
        loopOutputs.push({ connector: o.connector, buffers });
      }
      type LoopResult = {
        frames: number;
        elapsedMs: number;
        allocations: number;
        flips: Record<string, FlipRecord>;
        stats: OutputStats[];
      };
      // Timed without tracing or screendumps: both take QEMU's time, and the guest's flips with it.
      const before = await kms.call<OutputStats[]>('stats');
      const result = await kms.call<LoopResult>(
        'flipLoop',
        { config: { frames: 300, outputs: loopOutputs }, timeoutMs: 240000 },
        300000,
      );
      assert.equal(result.frames, 300);
      const parts = [];
      for (const o of outputs) {
        const f = result.flips[o.connector];
        assert.ok(f, `${o.connector} reported`);
        assert.equal(f.count, 300, `${o.connector}: every flip event reached JavaScript`);
        parts.push(`${o.connector} ${flipTimingCheck(o.connector, statsSince(before, result.stats, o.connector), f)}`);
      }

      const heads = outputs.map((o) => headOf(o.connector));
      await vm.traceEvents([SET_SCANOUT], true);
      try {
        // Which virtio-gpu resource is which buffer: each shown alone on every head, in loop
        // order, so the loop's buffer 0 follows the buffer 2 shown last.
        const bufferOf = new Map<string, number>();
        for (let b = 0; b < 3; b++) {
          const mark = vm.traceLog().length;
          await kms.call('flipsReset');
          const scene = loopOutputs.map((l) => ({ connector: l.connector, layers: [{ buffer: l.buffers[b] }] }));
          assert.equal(await kms.call('present', { scene }), 'committed');
          await flipsAwait(
            kms,
            outputs.map((o) => o.connector),
          );
          const scanouts = await scanoutsAwait(vm, mark, heads, 1);
          for (const head of heads) bufferOf.set(`${head}:${scanouts.get(head)?.at(-1)}`, b);
        }
        const mark = vm.traceLog().length;
        // Once warm (request arrays sized, layout tested), flipping must not touch the heap.
        let running = true;
        const loop = kms
          .call<LoopResult>(
            'flipLoop',
            { config: { frames: ORDER_FRAMES, outputs: loopOutputs }, timeoutMs: 120000 },
            150000,
          )
          .finally(() => {
            running = false;
          });
        // What QEMU scans out while the loop runs: a whole loop buffer of that very head.
        const dumped: string[] = [];
        while (dumped.length < outputs.length || (running && dumped.length < 9)) {
          const [i, o] = [dumped.length % outputs.length, outputs[dumped.length % outputs.length] as OutputInfo];
          const stamp = stampedFrame(ctx, `loop ${o.connector}`, await vm.screendump(headOf(o.connector)));
          assert.ok(
            stamp >= 16 * i && stamp < 16 * i + 3,
            `${o.connector} showed stamp ${stamp}, none of its loop buffers (${16 * i}-${16 * i + 2})`,
          );
          dumped.push(`${o.connector}:${stamp - 16 * i}`);
        }
        const again = await loop;
        assert.equal(again.allocations, 0, 'heap allocations on the frame path in steady state');
        const scanouts = await scanoutsAwait(vm, mark, heads, ORDER_FRAMES);
        for (const o of outputs) {
          const head = headOf(o.connector);
          const order = (scanouts.get(head) ?? []).map((res) => bufferOf.get(`${head}:${res}`));
          // One SET_SCANOUT per frame: the driver sends one only when the framebuffer changes.
          assert.equal(
            order.length,
            ORDER_FRAMES,
            `${o.connector}: ${order.length} scanout changes for ${ORDER_FRAMES} frames`,
          );
          for (const [n, b] of order.entries()) {
            if (b !== n % 3) {
              throw new Error(
                `${o.connector}: frame ${n} scanned out buffer ${b}, not ${n % 3}; order from there: ${order.slice(n, n + 9).join(',')}`,
              );
            }
          }
        }
        return `${(result.elapsedMs / 1000).toFixed(1)} s (${((300 * 1000) / result.elapsedMs).toFixed(1)} fps): ${parts.join('; ')}; ${ORDER_FRAMES} more frames: buffers 0,1,2 in order on every SET_SCANOUT of every head, screendumps during them ${dumped.join(' ')}; frame-path allocations: ${result.allocations} in the first loop, ${again.allocations} in the second`;
      } finally {
        await vm.traceEvents([SET_SCANOUT], false);
      }
    },
  },
  {
    id: 'shared-decode-3-heads',
    title: 'one decoder, one upload per frame, 3 heads frame-locked (screendumps taken together)',
    async run(ctx) {
      const { kms, vm } = ctx;
      const outputs = await outputsAll(kms);
      const { width, height } = outputs[0]?.mode ?? { width: 0, height: 0 };
      // Flat frames whose luma encodes the frame number; 2 fps so that, even on a loaded
      // machine where a screendump takes a few hundred ms, most rounds of three fall inside one frame.
      const clip = path.join(vm.scratch, 'counter.mp4');
      execFileSync('ffmpeg', [
        '-v',
        'error',
        '-y',
        '-f',
        'lavfi',
        '-i',
        `color=c=black:size=${width}x${height}:rate=2:duration=12,geq=lum='16+7*N':cb=128:cr=128`,
        '-c:v',
        'libx264',
        '-preset',
        'ultrafast',
        '-pix_fmt',
        'yuv420p',
        clip,
      ]);
      await kms.call('playVideo', { source: clip, consumer: 'wall', outputs: outputs.map((o) => o.connector) });
      await sleep(2500);
      type Counters = { uploads: number; framesShown: number; repeats: number; errors: number; lastError?: string };
      const shown = async () => (await kms.call<Counters>('videoCounters')).framesShown;
      // Screendumps are taken one after another, so a new frame may be committed between two
      // of them. A round counts only if the engine committed no new frame from shortly before
      // the first dump to after the last; in such a round every head must show the same frame.
      const rounds: number[][] = [];
      const straddled: number[][] = [];
      for (let attempt = 0; attempt < 24 && rounds.length < 5; attempt++) {
        const before = await shown();
        await sleep(40);
        const settled = await shown();
        const levels = [];
        for (const o of outputs) {
          const image = await vm.screendump(headOf(o.connector));
          const at = ((height >> 1) * width + (width >> 1)) * 3;
          levels.push(image.rgb[at] ?? -1);
        }
        const after = await shown();
        if (before === settled && settled === after) rounds.push(levels);
        else straddled.push(levels);
        await sleep(110);
      }
      const together = rounds.filter((l) => Math.max(...l) - Math.min(...l) <= 2).length;
      const distinct = new Set([...rounds, ...straddled].map((l) => l[0])).size;
      const status = await kms.call<{ decoders: Array<{ consumers: string[]; frames: number }> }>('decodeStatus');
      // Stop first, so the counters below are read from a still picture.
      await kms.call('stopVideo');
      const video = await kms.call<Counters>('videoCounters');
      const copies = await kms.call<{ conversions: number }>('copyCounters');
      assert.equal(status.decoders.length, 1, 'one decoder for three heads');
      assert.deepEqual(status.decoders[0]?.consumers, ['wall']);
      assert.ok(rounds.length >= 3, `only ${rounds.length} rounds without a new frame: ${JSON.stringify(straddled)}`);
      assert.equal(together, rounds.length, `heads showed different frames: ${JSON.stringify(rounds)}`);
      assert.ok(distinct >= 2, `the video moves: ${JSON.stringify(rounds)}`);
      // virtio-gpu's planes take no NV12: each uploaded frame is converted once for all heads.
      assert.equal(video.errors, 0, `video commits failed: ${video.lastError}`);
      assert.ok(video.uploads > 4, `uploads ${video.uploads}`);
      assert.equal(copies.conversions, video.uploads, 'one conversion per new frame, shared by the heads');
      return `same frame on 3 heads in ${together}/${rounds.length} still rounds (${rounds.map((l) => l.join('/')).join(' ')}; ${straddled.length} rounds straddled a flip); ${video.uploads} uploads, ${copies.conversions} conversions, ${video.framesShown} new-frame vblanks, ${video.repeats} repeats; decoder frames ${status.decoders[0]?.frames}`;
    },
  },
  {
    id: 'master-held',
    title: 'a second opener is refused with the holder named',
    async run(ctx) {
      await ctx.kms.call('open', { path: 'auto' });
      const second = await kmsClientStart(ctx.vm, ctx.repo);
      try {
        const e = await expectError(second.call('open', { path: '/dev/dri/card0' }), 'ERR_KMS_MASTER_HELD');
        assert.match(e.message, /another process is DRM master; open by \d+ \(node\)/);
        const bad = await expectError(second.call('open', { path: '/dev/null' }), 'ERR_KMS_OPEN');
        return `${e.message.replace(/^open: ERR_KMS_MASTER_HELD: /, '')}; /dev/null: ${bad.code}`;
      } finally {
        await second.stop();
      }
    },
  },
  {
    id: 'open-close-300',
    title: 'open/configure/close 300 times: no fd or memory growth',
    async run({ kms }) {
      const r = await kms.call<{ before: { fds: number; rssKb: number }; after: { fds: number; rssKb: number } }>(
        'cycle',
        { path: 'auto', times: 300 },
        600000,
      );
      assert.equal(r.after.fds, r.before.fds, 'fd count flat');
      const growth = r.after.rssKb - r.before.rssKb;
      // V8 may still grow its heap a little; a leak of one framebuffer per cycle would be 900 MB.
      assert.ok(growth < 4096, `RSS grew by ${growth} kB`);
      return `fds ${r.before.fds} -> ${r.after.fds}; RSS ${r.before.rssKb} -> ${r.after.rssKb} kB (${growth >= 0 ? '+' : ''}${growth} kB)`;
    },
  },
];

// ---------------------------------------------------------------- virtio-gpu scanouts

/** QEMU's trace of the guest's VIRTIO_GPU_CMD_SET_SCANOUT: the device told which resource a head shows. */
const SET_SCANOUT = 'virtio_gpu_cmd_set_scanout';
/** Frames of the traced (untimed) loop; it also proves steady-state flipping allocates nothing. */
const ORDER_FRAMES = 120;

/** Resource ids per head in SET_SCANOUT order, from the trace after `mark`, once each head has `atLeast`. */
async function scanoutsAwait(
  vm: Vm,
  mark: number,
  heads: number[],
  atLeast: number,
  timeoutMs = 10000,
): Promise<Map<number, string[]>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const byHead = new Map<number, string[]>();
    for (const m of vm
      .traceLog()
      .slice(mark)
      .matchAll(/virtio_gpu_cmd_set_scanout id (\d+), res 0x([0-9a-f]+)/g)) {
      const head = Number(m[1]);
      // Resource 0 is a head being disabled, not a frame.
      if (m[2] === '0') continue;
      byHead.set(head, [...(byHead.get(head) ?? []), m[2] as string]);
    }
    if (heads.every((h) => (byHead.get(h)?.length ?? 0) >= atLeast)) return byHead;
    if (Date.now() > deadline) {
      const counts = heads.map((h) => `head ${h}: ${byHead.get(h)?.length ?? 0}`).join(', ');
      throw new Error(`QEMU traced fewer than ${atLeast} SET_SCANOUTs per head in ${timeoutMs} ms (${counts})`);
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------- stamped video (clips.ts)

type VideoCountersLike = {
  uploads: number;
  zeroCopy: number;
  framesShown: number;
  errors: number;
  lastError?: string;
};

/**
 * A stamped clip the size of `o`'s mode, in the scratch share: 5 fps for 50 s, 250 frames, so
 * that samples taken seconds apart on a slow host still fall within one loop of it.
 */
function stampedClip(ctx: CaseContext, name: string, o: OutputInfo): { file: string; frames: number } {
  const spec = { width: o.mode.width, height: o.mode.height, fps: 5, seconds: 50 };
  const file = path.join(ctx.vm.scratch, name);
  clipMake(file, spec);
  return { file, frames: spec.fps * spec.seconds };
}

async function videoCountersAwait(
  kms: KmsClient,
  done: (v: VideoCountersLike) => boolean,
  what: string,
  timeoutMs = 30000,
): Promise<VideoCountersLike> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await kms.call<VideoCountersLike>('videoCounters');
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not seen in ${timeoutMs} ms: ${JSON.stringify(v)}`);
    await sleep(50);
  }
}

async function decoderFramesAwait(kms: KmsClient, atLeast: number, timeoutMs = 30000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await kms.call<{ decoders: Array<{ frames: number }> } | null>('decodeStatus');
    const frames = s?.decoders[0]?.frames ?? 0;
    if (frames >= atLeast) return frames;
    if (Date.now() > deadline)
      throw new Error(`the decoder did not reach ${atLeast} frames in ${timeoutMs} ms (${frames})`);
    await sleep(50);
  }
}

/** A writeback capture once the outputs are idle (the last commit may still be in flight). */
async function writebackCaptureIdle(
  ctx: CaseContext,
  connector: string,
  label: string,
  timeoutMs = 10000,
): Promise<Image> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await writebackCapture(ctx, connector);
    } catch (e) {
      if (!(e instanceof KmsCallError && e.code === 'ERR_KMS_BUSY'))
        throw new Error(`${label}: ${(e as Error).message}`);
      if (Date.now() > deadline) throw new Error(`${label}: the output stayed busy for ${timeoutMs} ms`);
      await sleep(20);
    }
  }
}

/** Reads a stamped frame from a capture, or saves the capture and fails with what was wrong. */
function stampedFrame(ctx: CaseContext, label: string, image: Image, matrix: Matrix = 'bt709'): number {
  const r = frameRead(image, { matrix });
  if (r.number === undefined) {
    imageSave(ctx, label, image);
    throw new Error(`${label}: not a whole, right frame of the clip: ${r.problem} (saved ${label}.ppm)`);
  }
  return r.number;
}

/**
 * Samples a playing stamped clip from the kernel's side: pause (the output keeps its frame),
 * writeback capture, let the still-running decoder write more frames than its surface pool
 * holds, capture again, resume; three times. Each capture must be one whole frame with its
 * chroma pattern right (planes, pitch, U/V order), the second of a pair the same frame as the
 * first (the surface on screen was not reused while shown), and the samples must go forward
 * through the clip (frame order). Returns the detail line.
 */
async function videoSamples(ctx: CaseContext, o: OutputInfo, clipFrames: number): Promise<string> {
  const { kms } = ctx;
  const matrix = clipMatrix(o.mode.height);
  const decoded = async (): Promise<number> =>
    (await kms.call<{ decoders: Array<{ frames: number }> }>('decodeStatus')).decoders[0]?.frames ?? 0;
  const numbers: number[] = [];
  let decodedBefore = 0;
  for (let i = 0; i < 3; i++) {
    if (i > 0) {
      await kms.call('videoResume');
      const shown = (await kms.call<VideoCountersLike>('videoCounters')).framesShown;
      await videoCountersAwait(kms, (v) => v.framesShown >= shown + 3, 'three new frames after resuming');
    }
    await kms.call('videoPause');
    const decodedAtPause = await decoded();
    const first = stampedFrame(ctx, `sample ${i}`, await writebackCaptureIdle(ctx, o.connector, `sample ${i}`), matrix);
    // More frames than the export pool (7) and the NV12 ring (3) hold: every free surface is
    // written at least once while the screen stands still.
    await decoderFramesAwait(kms, (await decoded()) + 10);
    const again = stampedFrame(
      ctx,
      `sample ${i} again`,
      await writebackCaptureIdle(ctx, o.connector, `sample ${i} again`),
      matrix,
    );
    assert.equal(
      again,
      first,
      `the still screen changed from frame ${first} to ${again} while the decoder ran on: a surface reused while on screen`,
    );
    const previous = numbers.at(-1);
    if (previous !== undefined) {
      // The clip loops, so numbers count modulo its length; the decoder's own count of frames
      // published between the two pauses bounds how far the picture may have moved on.
      const published = decodedAtPause - decodedBefore;
      assert.ok(
        published < clipFrames,
        `the decoder published ${published} frames between two samples, a whole loop of the clip: their order cannot be told (host too slow?)`,
      );
      const step = stepForward(previous, first, clipFrames);
      assert.ok(
        step >= 1 && step <= published + 2,
        `frame ${first} after frame ${previous} with ${published} frames decoded between: the video ${step === 0 ? 'stood still' : step > published + 2 ? 'went backward or jumped' : 'moved wrongly'} (${numbers.join(', ')})`,
      );
    }
    numbers.push(first);
    decodedBefore = decodedAtPause;
  }
  return `frames ${numbers.join(' -> ')} in order, each whole (stamps agree, chroma pattern right) and still while paused`;
}

const LOOP_BUFFERS = 6;

// ---------------------------------------------------------------- vkms + udmabuf

async function vkmsOutput(kms: KmsClient): Promise<OutputInfo> {
  const outputs = await outputsAll(kms);
  const o = outputs[0];
  assert.ok(o, 'vkms has a connected output');
  return o;
}

/**
 * The vkms output at 640x480 for video: vkms composes every captured frame on the guest's
 * emulated CPUs, next to a decoder, and at 1024x768 a writeback job under a loaded TCG host
 * outlasted the engine's 10 s wait.
 */
async function vkmsVideoOutput(kms: KmsClient): Promise<OutputInfo> {
  const o = await vkmsOutput(kms);
  const [small] = await kms.call<OutputInfo[]>('configure', {
    outputs: [{ connector: o.connector, mode: '640x480@60' }],
  });
  assert.ok(small, `${o.connector} at 640x480`);
  return small;
}

export const vkmsCases: VmCase[] = [
  {
    id: 'vkms-enumerate',
    title: 'vkms: overlay planes, YUV formats, writeback connector',
    async run({ kms }) {
      const opened = await kms.call<{ driver: string }>('open', { path: 'auto' });
      assert.equal(opened.driver, 'vkms');
      const connectors = await kms.call<ConnectorInfo[]>('connectors');
      assert.ok(
        connectors.some((c) => c.writeback),
        'a writeback connector',
      );
      const planes = await kms.call<PlaneInfo[]>('planes');
      const overlays = planes.filter((p) => p.kind === 'overlay');
      assert.ok(overlays.length >= 1, 'overlay planes');
      assert.ok(
        overlays.some((p) => p.formats.includes('NV12')),
        'an overlay takes NV12',
      );
      const rotations = [...new Set(planes.flatMap((p) => p.rotations))].sort((a, b) => a - b);
      return `${planes.length} planes (${overlays.length} overlays, NV12 on overlays), rotations ${rotations.join('/')}, zpos ${
        planes.some((p) => p.zpos) ? 'yes' : 'no'
      }, connectors ${connectors.map((c) => `${c.name}${c.writeback ? ' (writeback)' : ''}`).join(', ')}`;
    },
  },
  {
    id: 'prime-udmabuf',
    title: 'udmabuf XR24 and NV12 imported through PRIME and scanned out on overlay planes',
    async run(ctx) {
      const { kms } = ctx;
      const o = await vkmsOutput(kms);
      const background: Pattern = { kind: 'blocks', seed: 0 };
      const primary = await kms.call<number>('createBuffer', {
        width: o.mode.width,
        height: o.mode.height,
        format: 'XR24',
        pattern: background,
      });
      const xr: Pattern = { kind: 'gradient', seed: 2 };
      const nv: Pattern = { kind: 'blocks', seed: 5 };
      const a = await kms.call<{ buffer: number; cached: boolean }>('importUdmabuf', {
        width: 256,
        height: 256,
        format: 'XR24',
        pattern: xr,
      });
      const b = await kms.call<{ buffer: number; cached: boolean }>('importUdmabuf', {
        width: 256,
        height: 192,
        format: 'NV12',
        pattern: nv,
      });
      assert.equal(a.cached, false);
      const again = await kms.call<{ buffer: number; cached: boolean }>('importAgain', { buffer: b.buffer });
      assert.deepEqual(again, { buffer: b.buffer, cached: true }, 'the same dma-buf imports once');
      const ra = { x: 64, y: 64, width: 256, height: 256 };
      const rb = { x: 448, y: 320, width: 256, height: 192 };
      await kms.call('flipsReset');
      await kms.call('present', {
        scene: [
          {
            connector: o.connector,
            layers: [{ buffer: primary }, { buffer: a.buffer, dst: ra }, { buffer: b.buffer, dst: rb }],
          },
        ],
      });
      await flipsAwait(kms, [o.connector]);
      const image = await writebackCapture(ctx, o.connector);
      const lines = [
        regionCheck(ctx, 'XR24 overlay', image, ra, (x, y) => patternRgb(xr, x - ra.x, y - ra.y), 0),
        // YUV -> RGB in the kernel rounds differently from our reference; flat blocks keep chroma exact.
        regionCheck(ctx, 'NV12 overlay', image, rb, (x, y) => patternRgb(nv, x - rb.x, y - rb.y), 6),
        regionCheck(
          ctx,
          'primary',
          image,
          { x: 0, y: 0, width: o.mode.width, height: 64 },
          (x, y) => patternRgb(background, x, y),
          0,
        ),
      ];
      for (const buffer of [a.buffer, b.buffer]) await kms.call('closeImportFds', { buffer });
      const counters = await kms.call<{ conversions: number; bytesCopied: number }>('copyCounters');
      assert.equal(counters.bytesCopied, 0, 'zero-copy: the CPU copied nothing');
      return `${lines.join('; ')}; CPU bytes copied: ${counters.bytesCopied}`;
    },
  },
  {
    id: 'gbm-buffer',
    title: 'a GBM buffer object (Mesa) filled by the CPU and scanned out',
    async run(ctx) {
      const { kms } = ctx;
      const o = await vkmsOutput(kms);
      const pattern: Pattern = { kind: 'gradient', seed: 11 };
      const buffer = await kms.call<number>('createBuffer', {
        width: o.mode.width,
        height: o.mode.height,
        format: 'XR24',
        pattern,
        allocator: 'gbm',
      });
      await kms.call('flipsReset');
      await kms.call('present', { scene: [{ connector: o.connector, layers: [{ buffer }] }] });
      await flipsAwait(kms, [o.connector]);
      const image = await writebackCapture(ctx, o.connector);
      const whole = { x: 0, y: 0, width: o.mode.width, height: o.mode.height };
      const line = regionCheck(ctx, 'GBM buffer', image, whole, (x, y) => patternRgb(pattern, x, y), 0);
      assert.equal(
        await kms.call('release', { buffer: 999999 }).catch((e: KmsCallError) => e.code),
        'ERR_KMS_BUFFER_NOT_FOUND',
      );
      return line;
    },
  },
  {
    id: 'crop-dst-overlay',
    title: 'source crop and destination rectangle on an overlay plane',
    async run(ctx) {
      const { kms } = ctx;
      const o = await vkmsOutput(kms);
      const primary = await kms.call<number>('createBuffer', {
        width: o.mode.width,
        height: o.mode.height,
        format: 'XR24',
        pattern: { kind: 'solid', rgb: [10, 20, 30] },
      });
      const big: Pattern = { kind: 'gradient', seed: 9 };
      const overlay = await kms.call<number>('createBuffer', { width: 640, height: 480, format: 'XR24', pattern: big });
      const src = { x: 200, y: 100, width: 300, height: 200 };
      const dst = { x: 500, y: 400, width: 300, height: 200 };
      await kms.call('flipsReset');
      await kms.call('present', {
        scene: [{ connector: o.connector, layers: [{ buffer: primary }, { buffer: overlay, src, dst }] }],
      });
      await flipsAwait(kms, [o.connector]);
      const image = await writebackCapture(ctx, o.connector);
      return [
        regionCheck(
          ctx,
          'cropped overlay',
          image,
          dst,
          (x, y) => patternRgb(big, x - dst.x + src.x, y - dst.y + src.y),
          0,
        ),
        regionCheck(ctx, 'around it', image, { x: 0, y: 0, width: o.mode.width, height: dst.y }, () => [10, 20, 30], 0),
      ].join('; ');
    },
  },
  {
    id: 'rotation',
    title: 'rotation by the plane: 90, 180 and 270 degrees on an overlay',
    async run(ctx) {
      const { kms } = ctx;
      const o = await vkmsOutput(kms);
      const planes = await kms.call<PlaneInfo[]>('planes');
      assert.ok(
        planes.some((p) => p.kind === 'overlay' && p.rotations.includes(180)),
        'an overlay offers rotation',
      );
      const primary = await kms.call<number>('createBuffer', {
        width: o.mode.width,
        height: o.mode.height,
        format: 'XR24',
        pattern: { kind: 'solid', rgb: [0, 0, 0] },
      });
      const pattern: Pattern = { kind: 'gradient', seed: 3 };
      const w = 320;
      const h = 200;
      const overlay = await kms.call<number>('createBuffer', { width: w, height: h, format: 'XR24', pattern });
      // Where each source pixel (sx, sy) lands, for a destination box at (0, 0) of the rotated size.
      const inverse: Record<number, (x: number, y: number) => [number, number]> = {
        90: (x, y) => [y, h - 1 - x],
        180: (x, y) => [w - 1 - x, h - 1 - y],
        270: (x, y) => [w - 1 - y, x],
      };
      const lines = [];
      for (const rotation of [90, 180, 270]) {
        const sideways = rotation !== 180;
        const dst = { x: 100, y: 50, width: sideways ? h : w, height: sideways ? w : h };
        await kms.call('flipsReset');
        await kms.call('present', {
          scene: [{ connector: o.connector, layers: [{ buffer: primary }, { buffer: overlay, dst, rotation }] }],
        });
        await flipsAwait(kms, [o.connector]);
        const image = await writebackCapture(ctx, o.connector);
        const map = inverse[rotation] as (x: number, y: number) => [number, number];
        lines.push(
          regionCheck(
            ctx,
            `rotated ${rotation}`,
            image,
            dst,
            (x, y) => {
              const [sx, sy] = map(x - dst.x, y - dst.y);
              return patternRgb(pattern, sx, sy);
            },
            0,
          ),
        );
      }
      return lines.join('; ');
    },
  },
  {
    id: 'video-nv12-direct',
    title: 'decoded video on a plane that takes NV12: uploaded once, never converted; frames in order, planes right',
    async run(ctx) {
      const { kms } = ctx;
      const o = await vkmsVideoOutput(kms);
      const clip = stampedClip(ctx, 'stamped-nv12.mp4', o);
      await kms.call('playVideo', { source: clip.file, consumer: 'main', outputs: [o.connector] });
      await videoCountersAwait(kms, (v) => v.uploads >= 5, 'five frames uploaded');
      const samples = await videoSamples(ctx, o, clip.frames);
      await kms.call('stopVideo');
      const video = await kms.call<VideoCountersLike>('videoCounters');
      const copies = await kms.call<{ conversions: number }>('copyCounters');
      assert.equal(video.errors, 0, `video commits failed: ${video.lastError}`);
      assert.equal(copies.conversions, 0, 'NV12 went to the plane as it is');
      return `${video.uploads} frames uploaded, 0 conversions; ${samples}`;
    },
  },
  {
    id: 'video-dmabuf-zero-copy',
    title:
      'decoded frames in dma-bufs shaped like a VAAPI export: imported once per surface, scanned out with 0 CPU copies, never reused on screen',
    async run(ctx) {
      const { kms } = ctx;
      const o = await vkmsVideoOutput(kms);
      const clip = stampedClip(ctx, 'stamped-dmabuf.mp4', o);
      await kms.call('playVideo', { source: clip.file, consumer: 'main', outputs: [o.connector], hw: 'dmabuf' });
      await videoCountersAwait(kms, (v) => v.zeroCopy >= 15, 'fifteen zero-copy frames');
      // Read while playing: pausing releases the binding's framebuffers, resuming imports again.
      const framebuffers = await kms.call<number>('bufferCount');
      const status = await kms.call<{
        decoders: Array<{ path: string; exported: number; hwFallback?: string; frames: number }>;
      }>('decodeStatus');
      const samples = await videoSamples(ctx, o, clip.frames);
      await kms.call('stopVideo');
      const video = await kms.call<VideoCountersLike>('videoCounters');
      const copies = await kms.call<{ conversions: number; bytesCopied: number }>('copyCounters');
      const d = status.decoders[0];
      assert.equal(d?.path, 'dmabuf', `decoder path ${d?.path}: ${d?.hwFallback}`);
      assert.equal(video.errors, 0, `video commits failed: ${video.lastError}`);
      assert.equal(video.uploads, 0, 'no frame was copied into a scanout buffer');
      // The decoder's export pool has 7 surfaces: each imported once, then found in the cache.
      assert.ok(framebuffers <= 7, `${framebuffers} framebuffers for ${video.zeroCopy} frames`);
      assert.equal(copies.conversions, 0, 'no frame was converted');
      assert.equal(copies.bytesCopied, 0, 'the engine copied no bytes');
      return `${video.zeroCopy} frames shown from ${d?.exported} exported dma-bufs through ${framebuffers} framebuffers, 0 uploads, 0 conversions, 0 bytes copied by the engine; ${samples}`;
    },
  },
  {
    id: 'flip-loop-vkms',
    title: 'vkms flip loop of 300 frames: vblank timing; loops of 1..7 frames end on the next buffer each (writeback)',
    async run(ctx) {
      const { kms } = ctx;
      const o = await vkmsOutput(kms);
      // Six stamped buffers, so a step backward (5) cannot pass for a late or a normal one.
      const buffers: number[] = [];
      for (let b = 0; b < LOOP_BUFFERS; b++) {
        buffers.push(
          await kms.call<number>('createBuffer', {
            width: o.mode.width,
            height: o.mode.height,
            format: 'XR24',
            pattern: { kind: 'stamp', number: b, width: o.mode.width, height: o.mode.height },
          }),
        );
      }
      type LoopResult = { frames: number; elapsedMs: number; flips: Record<string, FlipRecord>; stats: OutputStats[] };
      const loop = (frames: number): Promise<LoopResult> =>
        kms.call<LoopResult>(
          'flipLoop',
          { config: { frames, outputs: [{ connector: o.connector, buffers }] }, timeoutMs: 240000 },
          300000,
        );
      // The cycle, frame by frame: a loop of k frames ends on buffer (k - 1) mod 6, as the
      // writeback sees it. (vkms's CRTC CRCs would show every vblank, but they stopped after
      // one entry in VMs where writeback had run: see README.md.)
      const ends: number[] = [];
      for (let k = 1; k <= LOOP_BUFFERS + 1; k++) {
        const r = await loop(k);
        assert.equal(r.flips[o.connector]?.count, k, `a loop of ${k} frames flipped ${k} times`);
        ends.push(stampedFrame(ctx, `loop of ${k}`, await writebackCaptureIdle(ctx, o.connector, `loop of ${k}`)));
      }
      const want = ends.map((_, i) => i % LOOP_BUFFERS);
      assert.deepEqual(ends, want, `loops of 1..${ends.length} frames ended on buffers ${ends.join(',')}`);

      const before = await kms.call<OutputStats[]>('stats');
      const result = await loop(300);
      const f = result.flips[o.connector];
      assert.ok(f);
      assert.equal(f.count, 300);
      assert.ok(f.maxStep >= 1, 'vkms reports real vblank sequence numbers');
      const timing = flipTimingCheck(o.connector, statsSince(before, result.stats, o.connector), f);
      const last = stampedFrame(ctx, 'after the loop', await writebackCaptureIdle(ctx, o.connector, 'after the loop'));
      assert.equal(last, 299 % LOOP_BUFFERS, "the loop ends on its last frame's buffer");
      return `${f.count} flips in ${(result.elapsedMs / 1000).toFixed(1)} s, ${timing}; writeback after it: stamp ${last}; loops of 1..${ends.length} frames end on buffers ${ends.join(',')}`;
    },
  },
  {
    id: 'hotplug',
    title: 'hot-unplug and replug a connector (vkms configfs): the other output keeps its content',
    async run(ctx) {
      const { kms, vm } = ctx;
      const card = await vkmsConfigfsDevice(vm, 'hotplug', 2);
      await kms.call('open', { path: card });
      const connectors = await kms.call<ConnectorInfo[]>('connectors');
      const names = connectors.filter((c) => !c.writeback).map((c) => c.name);
      assert.equal(names.length, 2, `two connectors on ${card}: ${names.join(', ')}`);
      const [keep, pull] = names as [string, string];
      const outputs = await kms.call<OutputInfo[]>('configure', { outputs: names.map((connector) => ({ connector })) });
      const colours: Record<string, Rgb> = { [keep]: [30, 140, 220], [pull]: [220, 140, 30] };
      const scene = [];
      for (const o of outputs) {
        const rgb = colours[o.connector] as Rgb;
        const buffer = await kms.call<number>('createBuffer', {
          width: o.mode.width,
          height: o.mode.height,
          format: 'XR24',
          pattern: { kind: 'solid', rgb },
        });
        scene.push({ connector: o.connector, layers: [{ buffer }] });
      }
      await kms.call('flipsReset');
      await kms.call('present', { scene });
      await flipsAwait(kms, names);
      const whole = (o: OutputInfo): Region => ({ x: 0, y: 0, width: o.mode.width, height: o.mode.height });
      const keptOutput = outputs.find((o) => o.connector === keep) as OutputInfo;

      const status = async (value: 1 | 2): Promise<DisplayEventLike> => {
        const r = await vm.exec([
          'sh',
          '-c',
          `echo ${value} > /sys/kernel/config/vkms/hotplug/connectors/conn2/status`,
        ]);
        assert.equal(r.code, 0, `configfs status write: ${r.stderr}`);
        return await kms.call<DisplayEventLike>('waitHotplug', { timeoutMs: 10000 });
      };
      const unplugged = await status(2);
      const pulled = unplugged.connectors?.find((c) => c.name === pull);
      assert.equal(pulled?.connected, false, `${pull} reported disconnected in the hotplug event`);
      // What the supervisor does on hotplug: drive what is still connected.
      const after = await kms.call<OutputInfo[]>('configure', { outputs: [{ connector: keep }] });
      assert.deepEqual(
        after.map((o) => o.connector),
        [keep],
      );
      const kept = regionCheck(
        ctx,
        'kept output after unplug',
        await writebackCapture(ctx, keep),
        whole(keptOutput),
        () => colours[keep] as Rgb,
        0,
      );

      const replugged = await status(1);
      assert.equal(replugged.connectors?.find((c) => c.name === pull)?.connected, true, `${pull} back`);
      const again = await kms.call<OutputInfo[]>('configure', { outputs: names.map((connector) => ({ connector })) });
      assert.equal(again.length, 2);
      const back = again.find((o) => o.connector === pull) as OutputInfo;
      const buffer = await kms.call<number>('createBuffer', {
        width: back.mode.width,
        height: back.mode.height,
        format: 'XR24',
        pattern: { kind: 'solid', rgb: colours[pull] as Rgb },
      });
      await kms.call('flipsReset');
      await kms.call('present', { scene: [{ connector: pull, layers: [{ buffer }] }] });
      await flipsAwait(kms, [pull]);
      const restored = regionCheck(
        ctx,
        'replugged output',
        await writebackCapture(ctx, pull),
        whole(back),
        () => colours[pull] as Rgb,
        0,
      );
      const stillKept = regionCheck(
        ctx,
        'kept output after replug',
        await writebackCapture(ctx, keep),
        whole(keptOutput),
        () => colours[keep] as Rgb,
        0,
      );
      await kms.call('close');
      return `${card}: unplug ${pull} -> event, ${keep} kept (${kept}); replug -> event, ${restored}; ${stillKept}`;
    },
  },
  {
    id: 'supervisor-hotplug',
    title: 'the supervisor drives every connected output and follows unplug/replug without restarting',
    async run({ vm, repo }) {
      const card = await vkmsConfigfsDevice(vm, 'supervisor', 2);
      // Connector names number on across vkms devices: read this card's from sysfs.
      const listing = await vm.exec(['ls', '/sys/class/drm']);
      const cardName = path.basename(card);
      const [first, second] = listing.stdout
        .split(/\s+/)
        .filter((n) => n.startsWith(`${cardName}-Virtual-`))
        .map((n) => n.slice(cardName.length + 1))
        .sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]));
      assert.ok(first && second, `two connectors on ${card}: ${listing.stdout}`);
      // One supervisor run; `silent` when Node died by a signal before driving any output. Under
      // TCG (no KVM) Node in this guest now and then dies at start-up with SIGSEGV or SIGTRAP
      // (V8's code is written on one emulated CPU and run on another; the kernel's own text
      // patching trips the same way, see run.ts). Retried once and reported, so a supervisor
      // that cannot start still fails.
      let silent = false;
      const once = async (): Promise<string> => {
        const proc = vm.spawn([`${repo}/bin/multihead`], {
          cwd: repo,
          env: {
            MULTIHEAD_DISPLAY_DEVICE: card,
            MULTIHEAD_DATA_DIR: '/tmp/multihead-data',
            // Only the display path, and no demo: under TCG a software-generated 1024x768 demo
            // takes the guest's CPU, and loading the MQTT, content and HTTP modules over 9p takes
            // minutes; hotplug events would wait behind both. The outputs show the installer
            // screen instead (one frame, drawn again only when its text changes: the replugged
            // output's mode). (The demo on KMS heads is the appliance image test's part.)
            MULTIHEAD_EXTENSIONS: 'led,playback,display',
            MULTIHEAD_PLAYBACK_DEMO: '0',
          },
        });
        const statusSet = async (value: 1 | 2): Promise<void> => {
          const r = await vm.exec([
            'sh',
            '-c',
            `echo ${value} > /sys/kernel/config/vkms/supervisor/connectors/conn2/status`,
          ]);
          assert.equal(r.code, 0, r.stderr);
        };
        const tail = (): string => `${proc.stdout()}${proc.stderr()}`.trim().split('\n').slice(-6).join(' | ');
        try {
          const driven = (name: string): RegExp => new RegExp(`"msg":"output ${name}: \\d+x\\d+@\\d+ on CRTC \\d+"`);
          await proc.waitForLine(driven(first), 60000);
          await proc.waitForLine(driven(second), 30000);
          await proc.waitForLine(/"msg":"supervisor running"/, 60000);
          await statusSet(2);
          await proc.waitForLine(new RegExp(`"msg":"output ${second} removed"`), 15000);
          await statusSet(1);
          await proc.waitForLine(/"connectors changed; reconfiguring outputs"[\s\S]*/, 15000);
          const deadline = Date.now() + 15000;
          while ((proc.stdout().match(new RegExp(`"msg":"output ${second}: `, 'g')) ?? []).length < 2) {
            if (Date.now() > deadline) throw new Error(`${second} was not driven again after replug`);
            await sleep(100);
          }
          proc.kill('SIGTERM');
          const exit = await Promise.race([
            proc.exited,
            sleep(20000).then(() => {
              throw new Error('the supervisor did not exit within 20 s of SIGTERM');
            }),
          ]);
          assert.equal(exit.code, 0, `exit code after SIGTERM: ${exit.code}`);
          assert.doesNotMatch(proc.stdout(), /"level":"(error|fatal)"/);
          return `${card}: ${first} + ${second} driven; unplug -> "output ${second} removed"; replug -> driven again; SIGTERM -> exit 0`;
        } catch (e) {
          const died = await Promise.race([
            proc.exited.then(
              (r) => r.signal,
              () => null,
            ),
            sleep(100).then(() => null),
          ]);
          silent = died !== null && !/"msg":"output /.test(proc.stdout());
          const dmesg = (await vm.exec(['sh', '-c', 'dmesg | tail -n 4'])).stdout.trim().split('\n').join(' | ');
          // A fatal error names itself at the top of stderr, before its stack.
          const head = proc.stderr().trim().split('\n').slice(0, 12).join(' | ');
          throw new Error(
            `${(e as Error).message}; supervisor output: ${tail()}; stderr begins: ${head}; dmesg: ${dmesg}`,
          );
        } finally {
          proc.kill('SIGKILL');
          await proc.exited.catch(() => {});
        }
      };
      try {
        return await once();
      } catch (e) {
        if (!silent) throw e;
        const first = (e as Error).message.split(';')[0];
        return `${await once()} (first run died at start-up: ${first})`;
      }
    },
  },
];

interface DisplayEventLike {
  kind: string;
  connectors?: ConnectorInfo[];
}

/**
 * Builds a vkms device through configfs with `crtcs` CRTCs, each with a primary plane, an
 * encoder, a connector and a writeback connector, and returns its card node.
 */
export async function vkmsConfigfsDevice(vm: Vm, name: string, crtcs: number): Promise<string> {
  const d = `/sys/kernel/config/vkms/${name}`;
  const lines = [`set -e`, `before=$(ls /dev/dri)`, `mkdir ${d}`];
  for (let i = 1; i <= crtcs; i++) {
    lines.push(
      `mkdir ${d}/crtcs/crtc${i}`,
      `echo 1 > ${d}/crtcs/crtc${i}/writeback`,
      `mkdir ${d}/planes/plane${i}`,
      `echo 1 > ${d}/planes/plane${i}/type`,
      `ln -s ${d}/crtcs/crtc${i} ${d}/planes/plane${i}/possible_crtcs/`,
      `mkdir ${d}/encoders/encoder${i}`,
      `ln -s ${d}/crtcs/crtc${i} ${d}/encoders/encoder${i}/possible_crtcs/`,
      `mkdir ${d}/connectors/conn${i}`,
      `ln -s ${d}/encoders/encoder${i} ${d}/connectors/conn${i}/possible_encoders/`,
    );
  }
  lines.push(
    `echo 1 > ${d}/enabled`,
    `for i in 1 2 3 4 5 6 7 8 9 10; do`,
    `  for n in $(ls /dev/dri); do echo "$before" | grep -qx "$n" || { case $n in card*) echo /dev/dri/$n; exit 0;; esac; }; done`,
    `  sleep 0.2`,
    `done`,
    `echo "no new card appeared" >&2; exit 1`,
  );
  const r = await vm.exec(['sh', '-c', lines.join('\n')]);
  if (r.code !== 0) throw new Error(`vkms configfs device ${name}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout.trim();
}
