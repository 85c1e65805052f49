// Runs inside the test VM: drives the native KMS engine on the guest's real DRM device for
// the host, one JSON request per stdin line, one JSON reply per stdout line:
//
//   host -> guest  {"id":1,"method":"configure","params":{...}}
//   guest -> host  {"id":1,"result":...}  or  {"id":1,"error":{"code":"ERR_KMS_...","message":"..."}}
//
// Test images are generated here from a small description (test/vm/pattern.ts), so only
// descriptions and verdicts cross the serial line; captured frames go through the scratch share.
import fs from 'node:fs';
import readline from 'node:readline';
import type {
  DecodeManager,
  DisplayEvent,
  DmaBufDescriptor,
  FlipLoopConfig,
  ImportResult,
  KmsDevice,
  OutputConfig,
  OutputScene,
  VideoOutput,
} from '../../../native/index.d.ts';
import { loadAddon } from '../../../src/native/addon.ts';
import { type Pattern, patternNV12, patternXR24 } from '../pattern.ts';

const addon = loadAddon();
let device: KmsDevice | undefined;
let decode: DecodeManager | undefined;
/** What playVideo last bound, for videoResume. */
let playing: { consumer: string; outputs: VideoOutput[] } | undefined;

interface FlipRecord {
  count: number;
  lastSequence: number;
  /** Largest vblank distance between two consecutive flips on this CRTC. */
  maxStep: number;
  /** Flips more than one vblank after the previous one. */
  late: number;
  /** Flips exactly two vblanks after the previous one (one vblank missed). */
  lateOne: number;
}
let flips = new Map<string, FlipRecord>();
let loopDone: ((frames: number) => void) | undefined;
const hotplugWaiters: Array<(e: DisplayEvent) => void> = [];
const hotplugSeen: DisplayEvent[] = [];
let fallbacks: DisplayEvent[] = [];

/** Imported dma-bufs, kept so a test can import the same one again and hit the cache. */
const imports = new Map<number, DmaBufDescriptor>();

const onEvent = (event: DisplayEvent): void => {
  if (event.kind === 'flip' && event.connector !== undefined && event.sequence !== undefined) {
    const r = flips.get(event.connector) ?? { count: 0, lastSequence: 0, maxStep: 0, late: 0, lateOne: 0 };
    if (r.count > 0) {
      const step = event.sequence - r.lastSequence;
      r.maxStep = Math.max(r.maxStep, step);
      if (step > 2) r.late++;
      if (step === 2) r.lateOne++;
    }
    r.count++;
    r.lastSequence = event.sequence;
    flips.set(event.connector, r);
  } else if (event.kind === 'loopDone') {
    loopDone?.(event.frames ?? 0);
  } else if (event.kind === 'fallback') {
    fallbacks.push(event);
  } else if (event.kind === 'hotplug') {
    const waiter = hotplugWaiters.shift();
    if (waiter) waiter(event);
    else hotplugSeen.push(event);
  }
};

const open = (path: string): KmsDevice => {
  const d = addon.KmsDevice.open(path);
  d.onEvent(onEvent);
  return d;
};

const need = (): KmsDevice => {
  if (!device) throw Object.assign(new Error('no device open'), { code: 'ERR_TEST_NO_DEVICE' });
  return device;
};

interface ImageSpec {
  width: number;
  height: number;
  format: 'XR24' | 'NV12';
  pattern: Pattern;
}

const imageBytes = (spec: ImageSpec): { data: Uint8Array; planes: Array<{ offset: number; pitch: number }> } => {
  if (spec.format === 'XR24') {
    return { data: patternXR24(spec.pattern, spec.width, spec.height), planes: [{ offset: 0, pitch: spec.width * 4 }] };
  }
  const nv12 = patternNV12(spec.pattern, spec.width, spec.height);
  return {
    data: nv12.data,
    planes: [
      { offset: 0, pitch: nv12.pitch },
      { offset: nv12.uvOffset, pitch: nv12.pitch },
    ],
  };
};

const fdCount = (): number => fs.readdirSync('/proc/self/fd').length;
const rssKb = (): number => {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : -1;
};

type Params = Record<string, unknown>;
const methods: Record<string, (p: Params) => unknown> = {
  devices: () => addon.listDrmDevices(),
  open: (p) => {
    device?.close();
    flips = new Map();
    fallbacks = [];
    hotplugSeen.length = 0;
    device = open(String(p.path ?? 'auto'));
    return { path: device.path, driver: device.driver };
  },
  connectors: () => need().connectors(),
  crtcs: () => need().crtcs(),
  planes: () => need().planes(),
  configure: (p) => need().configure(p.outputs as OutputConfig[]),
  createBuffer: (p) => {
    const spec = p as unknown as ImageSpec & { allocator?: 'dumb' | 'gbm' };
    const id =
      spec.allocator === 'gbm'
        ? need().createGbmBuffer(spec.width, spec.height, spec.format)
        : need().createDumbBuffer(spec.width, spec.height, spec.format);
    need().writeBuffer(id, imageBytes(spec).data);
    return id;
  },
  importUdmabuf: (p) => {
    const spec = p as unknown as ImageSpec & { modifier?: string };
    const { data, planes } = imageBytes(spec);
    const fd = addon.createUdmabuf(data);
    const size = Math.ceil(data.length / 4096) * 4096;
    const descriptor: DmaBufDescriptor = {
      width: spec.width,
      height: spec.height,
      format: spec.format,
      objects: [{ fd, size }],
      planes: planes.map((pl) => ({ object: 0, offset: pl.offset, pitch: pl.pitch })),
      ...(spec.modifier !== undefined ? { modifier: spec.modifier } : {}),
    };
    let result: ImportResult;
    try {
      result = need().importDmaBuf(descriptor);
    } catch (e) {
      addon.closeFd(fd);
      throw e;
    }
    imports.set(result.buffer, descriptor);
    return { ...result, fd };
  },
  importAgain: (p) => {
    const descriptor = imports.get(Number(p.buffer));
    if (!descriptor) throw new Error(`buffer ${String(p.buffer)} was not imported here`);
    return need().importDmaBuf(descriptor);
  },
  closeImportFds: (p) => {
    const descriptor = imports.get(Number(p.buffer));
    for (const o of descriptor?.objects ?? []) addon.closeFd(o.fd);
    imports.delete(Number(p.buffer));
    return true;
  },
  present: (p) => need().present(p.scene as OutputScene[]),
  release: (p) => need().releaseBuffer(Number(p.buffer)),
  bufferCount: () => need().bufferCount(),
  stats: () => need().stats(),
  flipsReset: () => {
    flips = new Map();
    return true;
  },
  flips: () => Object.fromEntries(flips),
  fallbacks: () => fallbacks,
  copyCounters: () => need().copyCounters(),
  flipLoop: async (p) => {
    const d = need();
    flips = new Map();
    const started = performance.now();
    const done = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`flip loop did not finish in ${String(p.timeoutMs)} ms`)),
        Number(p.timeoutMs ?? 120000),
      );
      loopDone = (frames) => {
        clearTimeout(timer);
        resolve(frames);
      };
    });
    const allocationsBefore = d.framePathAllocations();
    d.startFlipLoop(p.config as FlipLoopConfig);
    const frames = await done;
    const allocations = d.framePathAllocations() - allocationsBefore;
    // Flip events of the last frame may still be on their way through the thread-safe function.
    await new Promise((r) => setTimeout(r, 200));
    return {
      frames,
      elapsedMs: performance.now() - started,
      allocations,
      flips: Object.fromEntries(flips),
      stats: d.stats(),
    };
  },
  capture: (p) => {
    const frame = need().captureWriteback(String(p.connector));
    fs.writeFileSync(String(p.file), frame.data);
    return { width: frame.width, height: frame.height, pitch: frame.pitch };
  },
  waitHotplug: async (p) => {
    const seen = hotplugSeen.shift();
    if (seen) return seen;
    return await new Promise<DisplayEvent>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no hotplug event')), Number(p.timeoutMs ?? 10000));
      hotplugWaiters.push((e) => {
        clearTimeout(timer);
        resolve(e);
      });
    });
  },
  close: () => {
    device?.close();
    device = undefined;
    decode?.close();
    decode = undefined;
    return true;
  },
  /** Decodes `source` once and plays it on `outputs` (connector names or VideoOutput objects). */
  playVideo: (p) => {
    decode ??= new addon.DecodeManager({});
    const consumer = String(p.consumer ?? 'video');
    decode.acquire(consumer, { source: String(p.source), ...(p.hw ? { hw: String(p.hw) } : {}) });
    const outputs = (p.outputs as Array<string | { connector: string }>).map((o) =>
      typeof o === 'string' ? { connector: o } : o,
    );
    need().playVideo(decode, consumer, outputs);
    playing = { consumer, outputs };
    return true;
  },
  /**
   * Takes the video off the outputs (each keeps its last frame, still) while its decoder runs
   * on: a writeback capture needs idle outputs, and a still screen next to a running decoder
   * shows whether the surface on screen is left alone.
   */
  videoPause: () => {
    need().stopVideo();
    return true;
  },
  /** Plays the paused decoder again on the outputs it had: its frame numbers carry on. */
  videoResume: () => {
    if (!decode || !playing) throw new Error('no paused video to resume');
    need().playVideo(decode, playing.consumer, playing.outputs);
    return true;
  },
  stopVideo: () => {
    need().stopVideo();
    decode?.close();
    decode = undefined;
    playing = undefined;
    return true;
  },
  decodeStatus: () => decode?.status() ?? null,
  videoCounters: () => need().videoCounters(),
  proc: () => ({ fds: fdCount(), rssKb: rssKb() }),
  /** Opens, configures every connected connector, shows a buffer, and closes, `times` times. */
  cycle: async (p) => {
    device?.close();
    device = undefined;
    const times = Number(p.times ?? 1);
    const sample = (): { fds: number; rssKb: number } => {
      (globalThis as { gc?: () => void }).gc?.();
      return { fds: fdCount(), rssKb: rssKb() };
    };
    const run = (): void => {
      const d = addon.KmsDevice.open(String(p.path ?? 'auto'));
      try {
        const outputs = d
          .connectors()
          .filter((c) => c.connected && !c.writeback)
          .map((c) => ({ connector: c.name }));
        const configured = d.configure(outputs);
        const first = configured[0];
        if (first) {
          const b = d.createDumbBuffer(first.mode.width, first.mode.height, 'XR24');
          d.present([{ connector: first.connector, layers: [{ buffer: b }] }]);
        }
      } finally {
        d.close();
      }
    };
    // Warm up first so one-time allocations (thread stacks, caches) are not counted as growth.
    for (let i = 0; i < 10; i++) run();
    const before = sample();
    for (let i = 0; i < times; i++) run();
    await new Promise((r) => setTimeout(r, 100));
    const after = sample();
    return { before, after };
  },
};
Object.assign(methods, (await import('./kms-server-video.ts')).videoMethods(addon));

const reply = (message: object): void => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
};

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let request: { id: number; method: string; params?: Params };
  try {
    request = JSON.parse(line);
  } catch {
    reply({ id: -1, error: { code: 'ERR_TEST_BAD_REQUEST', message: `not JSON: ${line.slice(0, 80)}` } });
    return;
  }
  const method = methods[request.method];
  if (!method) {
    reply({ id: request.id, error: { code: 'ERR_TEST_NO_METHOD', message: `no method ${request.method}` } });
    return;
  }
  Promise.resolve()
    .then(() => method(request.params ?? {}))
    .then(
      (result) => reply({ id: request.id, result: result ?? null }),
      (e: Error & { code?: string }) => {
        const code = /^(ERR_[A-Z_]+): /.exec(e.message)?.[1] ?? e.code ?? 'ERR_UNKNOWN';
        reply({ id: request.id, error: { code, message: e.message } });
      },
    );
});
rl.on('close', () => {
  device?.close();
  process.exit(0);
});
reply({ ready: true, pid: process.pid });
