// The video cases' methods of the guest's kms-server (test/vm/cases-video.ts). They drive
// their own device and decode manager, so the events they need (every flip's kernel vblank
// sequence per connector, videoError/videoRecovered, fallback) are recorded here as they come.
import fs from 'node:fs';
import type {
  DecodeManager,
  DisplayEvent,
  KmsDevice,
  OutputConfig,
  PlayRecord,
  VideoOutput,
} from '../../../native/index.d.ts';
import type { loadAddon } from '../../../src/native/addon.ts';

type Addon = ReturnType<typeof loadAddon>;
type Params = Record<string, unknown>;

/** Kernel vblank sequence numbers of one connector's flips, in arrival order. */
interface Sequences {
  count: number;
  last: number;
  /** steps[n]: flips that came n vblanks after the previous one (index 0 unused, 4 = 4+). */
  steps: number[];
}

export function videoMethods(addon: Addon): Record<string, (p: Params) => unknown> {
  let device: KmsDevice | undefined;
  let decode: DecodeManager | undefined;
  let sequences = new Map<string, Sequences>();
  let videoEvents: DisplayEvent[] = [];
  /** Kernel vblank timestamps (µs) of each connector's newest flips, to check play records against. */
  let flipTimes = new Map<string, number[]>();
  /** Closed play records drained so far (the engine hands each over once). */
  let playClosed: PlayRecord[] = [];

  const onEvent = (event: DisplayEvent): void => {
    if (event.kind === 'flip' && event.connector !== undefined && event.sequence !== undefined) {
      const r = sequences.get(event.connector) ?? { count: 0, last: 0, steps: [0, 0, 0, 0, 0] };
      if (r.count > 0) {
        const step = Math.min(4, Math.max(0, event.sequence - r.last));
        r.steps[step] = (r.steps[step] ?? 0) + 1;
      }
      r.count++;
      r.last = event.sequence;
      sequences.set(event.connector, r);
      if (event.timestampUs !== undefined) {
        const times = flipTimes.get(event.connector) ?? [];
        times.push(event.timestampUs);
        if (times.length > 4000) times.shift();
        flipTimes.set(event.connector, times);
      }
    } else if (event.kind === 'videoError' || event.kind === 'videoRecovered' || event.kind === 'fallback') {
      videoEvents.push({ ...event, timestampUs: performance.now() * 1000 });
    }
  };
  const need = (): KmsDevice => {
    if (!device) throw Object.assign(new Error('no video device open'), { code: 'ERR_TEST_NO_DEVICE' });
    return device;
  };
  const close = (): void => {
    device?.close();
    device = undefined;
    decode?.close();
    decode = undefined;
  };

  return {
    /** Opens `path`; `faultModifier` is set as MULTIHEAD_FAULT_DMABUF_MODIFIER while it opens. */
    vOpen: (p) => {
      close();
      sequences = new Map();
      videoEvents = [];
      flipTimes = new Map();
      playClosed = [];
      if (p.faultModifier !== undefined) process.env.MULTIHEAD_FAULT_DMABUF_MODIFIER = String(p.faultModifier);
      try {
        device = addon.KmsDevice.open(String(p.path));
      } finally {
        delete process.env.MULTIHEAD_FAULT_DMABUF_MODIFIER;
      }
      device.onEvent(onEvent);
      return { path: device.path, driver: device.driver };
    },
    vConnectors: () => need().connectors(),
    vConfigure: (p) => need().configure(p.outputs as OutputConfig[]),
    /** Binds `consumer`'s decoder of `source` to `outputs`; the decoders live until vClose. */
    vPlay: (p) => {
      decode ??= new addon.DecodeManager({});
      const consumer = String(p.consumer);
      decode.acquire(consumer, { source: String(p.source), ...(p.hw ? { hw: String(p.hw) } : {}) });
      need().playVideo(decode, consumer, p.outputs as VideoOutput[]);
      return true;
    },
    /** Display power of one output (DPMS: its CRTC inactive or active again). */
    vPower: (p) => {
      need().setPower(String(p.connector), Boolean(p.on));
      return true;
    },
    /** Ends `consumer`'s claim on its decoder (stop the outputs first: vStop). */
    vRelease: (p) => {
      decode?.release(String(p.consumer));
      return true;
    },
    /** Stops video on every output (each keeps its last frame); the decoders go on. */
    vStop: () => {
      need().stopVideo();
      return true;
    },
    vSequencesReset: () => {
      sequences = new Map();
      return true;
    },
    vSequences: () => Object.fromEntries(sequences),
    vEvents: () => videoEvents,
    vFlipTimes: (p) => flipTimes.get(String(p.connector)) ?? [],
    /** Every closed play record so far and the open ones now. */
    vPlayRecords: () => {
      const now = need().playRecords();
      playClosed.push(...now.filter((r) => r.end !== 'open'));
      return [...playClosed, ...now.filter((r) => r.end === 'open')];
    },
    vCounters: () => need().videoCounters(),
    vStats: () => need().stats(),
    vDecodeStatus: () => decode?.status() ?? null,
    vBufferCount: () => need().bufferCount(),
    vAllocations: () => need().framePathAllocations(),
    vCapture: (p) => {
      const frame = need().captureWriteback(String(p.connector));
      fs.writeFileSync(String(p.file), frame.data);
      return { width: frame.width, height: frame.height, pitch: frame.pitch };
    },
    vClose: () => {
      close();
      return true;
    },
    /** addon.panicForTest (the server runs with MULTIHEAD_TEST_HOOKS=1): "call" throws here. */
    vPanic: (p) => {
      addon.panicForTest(String(p.target));
      return true;
    },
    vPanics: () => addon.nativePanics(),
    vFrameLoops: () => addon.frameLoops(),
  };
}
