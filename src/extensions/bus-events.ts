// The bus events whose payloads are feature types, added to the core's `BusEvents` by declaration
// merging: src/supervisor/bus.ts imports nothing from the features, the features' types come
// here. Types only: nothing imports this file at run time, `tsc` reads it with the rest of src/.
import type { Config } from '../config/schema.ts';
import type { ContentSync } from '../content/sync-job.ts';
import type { DisplayPowerResult } from '../display/power.ts';
import type { Screens } from '../display/screens.ts';
import type {
  DecodeManager,
  DecodeStatus,
  DrmDeviceInfo,
  MonitorInfo,
  OutputInfo,
  VirtualDisplay,
} from '../native/addon.ts';
import type { FirmwareStatus } from '../update/extension.ts';
import type { FirmwareUpdate } from '../update/job.ts';

declare module '../supervisor/bus.ts' {
  interface BusEvents {
    /** The outputs exist and can be drawn on: real ones, or virtual ones and why. */
    'display.ready':
      | { mode: 'kms'; device: DrmDeviceInfo; screens: Screens }
      /** `display`: the memory scanouts themselves, for benches and tests that read pixels. */
      | { mode: 'virtual'; reason: string; screens: Screens; display?: VirtualDisplay };
    /**
     * The outputs driven now, after start, a config change or hotplug; `monitors`: each
     * driven connector's monitor from its EDID (null: none readable).
     */
    'display.outputs': { outputs: OutputInfo[]; monitors?: Record<string, MonitorInfo | null> };
    /** Outputs whose display power `display.power` changed (DPMS), and what CEC did on them. */
    'display.power': DisplayPowerResult;
    /** An output's HDMI-CEC state changed (adapter set up, TV power read back, an error). */
    'display.cec': Record<string, never>;
    /** A different monitor (EDID name, serial or product) on a connector that had one. */
    'display.monitor.changed': { output: string; before: MonitorInfo; after: MonitorInfo | null };
    /**
     * An output stopped showing new frames because of the video engine (a refused commit, a
     * format no plane takes, a source with no frame): once per output and cause, never per vblank.
     */
    'video.error': { output: string; code: string; message: string };
    /** The output of an earlier `video.error` shows new frames again. */
    'video.recovered': { output: string; code: string };
    /**
     * A decoder stopped on a failure, once per decoder: the outputs showing it keep their last
     * frame until playback gives them something else (docs/content.md, "When a source fails").
     */
    'decode.failed': { decoder: number; source: string; outputs: string[]; code: string; message: string };
    /** Decoders and their consumers, periodically (later shown over MQTT, HTTP and the CLI). */
    'decode.status': { status: DecodeStatus };
    /**
     * Playback is ready for others to show things: the outputs, the one decode manager (so every
     * source is decoded once, whoever shows it) and `claim`, which makes the built-in demo let go
     * of outputs that content takes over.
     */
    'playback.ready': { screens: Screens; decode: DecodeManager; claim: (outputs: readonly string[]) => void };
    /**
     * A content sync job (the media fetch of one content apply) was accepted, progressed or
     * ended; the MQTT extension publishes it on `jobs/<jobId>`.
     */
    'content.sync': ContentSync;
    /** A firmware update job was accepted, progressed or ended; MQTT publishes it on `jobs/<jobId>`. */
    'firmware.update': FirmwareUpdate;
    /** The running firmware version and the A/B slots (status and state show it). */
    'firmware.status': FirmwareStatus;
    /** A desired configuration (MQTT) was validated, saved and applied as far as it can be live. */
    'config.applied': {
      version: number;
      config: Config;
      /** Keys that changed and took effect at once. */
      applied: string[];
      /** Keys that changed and take effect at the next start. */
      restartRequired: string[];
    };
  }
}
