import type { Config } from '../config/schema.ts';
import type { Screens } from '../display/screens.ts';
import { consumerOn } from '../display/screens.ts';
import type { Logger } from '../log/logger.ts';
import type { DecodeManager } from '../native/addon.ts';
import type { BusEvents, EventBus } from '../supervisor/bus.ts';
import { CommandError, type CommandRegistry } from '../supervisor/commands.ts';
import type { Extension } from '../supervisor/extension.ts';
import { appVersion } from '../version.ts';
import { DecoderWatch } from './decoder-watch.ts';
import { Demo } from './demo.ts';
import { acquireFirstPicture, type FirstPictureError, releaseQuietly } from './first-picture.ts';
import { InstallerScreen } from './installer-screen.ts';
import { maxDecodersArg, outputsArg, playOptions, sharedArg } from './play-args.ts';
import { Previews } from './previews.ts';
import { screenshotCommand } from './screenshot.ts';
import { mediaDirs, sourceCheck } from './source-policy.ts';

const STATUS_FIRST_MS = 2000;
const STATUS_EVERY_MS = 60_000;
/** How often decoders are checked for a fallback to software (cheap: one status call). */
const FALLBACK_CHECK_MS = 1000;
/** Per-output counters for telemetry and metrics. */
const OUTPUT_STATS_MS = 5000;
/**
 * Until every output shows its first frame, the counters are read this often: health (and with
 * it systemd's READY=1 and the boot assessment an update waits for) learns of the first frames
 * within this, not at the next 5 s round.
 */
const FIRST_FRAME_POLL_MS = 100;
const FIRST_FRAME_POLLS = 300;
/**
 * How long outputs keep the last frame of a source that failed mid-stream before the demo (or
 * what content shows) takes them back: long enough for a person looking at the screen, the
 * status page or `health` to see which output failed, short enough not to look like a hang.
 */
export const FAILED_HOLD_MS = 5000;

export interface PlaybackExtensionDeps {
  readonly config: Pick<Config, 'dataDir' | 'decode' | 'playback' | 'preview' | 'device' | 'http' | 'mqtt'>;
  readonly logger: Logger;
  readonly bus: Pick<EventBus, 'on' | 'emit' | 'latest'>;
  readonly commands: Pick<CommandRegistry, 'register'>;
  /** One decoder per source, shared by every output that shows it; closed at stop. */
  readonly decode: DecodeManager;
  /** The render node (/dev/dri/renderD*) of the GPU behind a card node, if it has one. */
  readonly renderNodeOf: (cardPath: string) => string | undefined;
  /** Tests: how long a failed source's last frame stays (default FAILED_HOLD_MS). */
  readonly failedHoldMs?: number;
  /** Tests: how often decoders are checked for failures and fallbacks (default 1 s). */
  readonly failureCheckMs?: number;
}

/** What outputs nobody has claimed show: the demo, or else the installer screen. */
type Idle = Pick<Demo, 'claim' | 'unclaim' | 'fill'>;

/**
 * What plays. Owns the decode manager. Until content and schedules arrive every output, KMS or
 * virtual, shows the installer screen, or the built-in demo when `playback.demo` is on. Offers `play`, `stop`, `decode.status`, `decode.shared`,
 * `decode.maxDecoders` and `screenshot`; reports each decoder's failure and fallback to software
 * once, and keeps JPEG previews.
 */
export class PlaybackExtension implements Extension {
  readonly name = 'playback';
  readonly #deps: PlaybackExtensionDeps;
  readonly #demo: Idle;
  readonly #installer: InstallerScreen | undefined;
  readonly #watch: DecoderWatch;
  readonly #withdraw: Array<() => void> = [];
  #screens: Screens | undefined;
  #previews: Previews | undefined;
  #timers: NodeJS.Timeout[] = [];
  /** Outputs playing a source asked for with the `play` command, and the consumer showing it. */
  readonly #manual = new Map<string, string>();
  #manualSerial = 0;
  /** Play consumers whose decoder failed, and the timer that gives their outputs back. */
  readonly #failedHolds = new Map<string, NodeJS.Timeout>();

  constructor(deps: PlaybackExtensionDeps) {
    this.#deps = deps;
    const { config, logger, bus, decode } = deps;
    if (config.playback.demo) {
      this.#demo = new Demo({ decode, logger, bus, enabled: true, hw: config.decode.hardware });
    } else {
      this.#installer = new InstallerScreen({ decode, logger, bus: deps.bus, config, version: appVersion });
      this.#demo = this.#installer;
    }
    this.#watch = new DecoderWatch({ logger, bus, outputsOf: (consumers) => this.#outputsShowing(consumers) });
  }

  /** The driven outputs that show one of these consumers now. */
  #outputsShowing(consumers: readonly string[]): string[] {
    const screens = this.#screens;
    if (!screens) return [];
    return screens
      .outputs()
      .map((o) => o.name)
      .filter((name) => consumers.includes(consumerOn(screens, name)));
  }

  start(): void {
    this.#installer?.start();
    this.#displayFollow();
    this.#decodeCommandsRegister();
    this.#withdraw.push(this.#deps.commands.register(screenshotCommand({ screens: () => this.#screens })));
    this.#playCommandsRegister();
    this.#timersStart();
  }

  stop(): void {
    this.#installer?.stop();
    for (const w of this.#withdraw.splice(0)) w();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers = [];
    for (const timer of this.#failedHolds.values()) clearTimeout(timer);
    this.#failedHolds.clear();
    this.#previews?.stop();
    this.#previews = undefined;
    // Outputs keep their last frame until the display lets go of them.
    this.#deps.decode.close();
    this.#screens = undefined;
  }

  #displayFollow(): void {
    const { bus } = this.#deps;
    this.#withdraw.push(
      bus.on('display.ready', (ready) => this.#displayReady(ready)),
      // After hotplug the new outputs join the demo; outputs still there keep playing.
      bus.on('display.outputs', () => {
        if (this.#screens?.kind === 'kms') this.#demo.fill(this.#screens);
      }),
      bus.on('decode.failed', (failed) => this.#playFailed(failed)),
    );
  }

  #displayReady(ready: BusEvents['display.ready']): void {
    const { bus, decode } = this.#deps;
    const screens = ready.screens;
    this.#screens = screens;
    this.#vaapiDeviceSet(ready);
    this.#demo.fill(screens);
    this.#previewsStart(screens);
    bus.emit('playback.ready', { screens, decode, claim: (outputs) => this.#demo.claim(outputs) });
  }

  /** Decode on the GPU that scans out: its render node, unless config names one. */
  #vaapiDeviceSet(ready: BusEvents['display.ready']): void {
    const { config, decode, renderNodeOf } = this.#deps;
    const configured = config.decode.vaapiDevice;
    if (ready.mode === 'kms') {
      decode.setVaapiDevice((configured === 'auto' ? renderNodeOf(ready.device.path) : configured) ?? null);
    } else if (configured !== 'auto') {
      decode.setVaapiDevice(configured);
    }
  }

  #previewsStart(screens: Screens): void {
    const { config, logger, bus } = this.#deps;
    this.#previews = new Previews({
      screens,
      logger,
      intervalMs: config.preview.intervalS * 1000,
      width: config.preview.width,
      onPreview: (output, p) => bus.emit('preview.updated', { output, ...p }),
    });
    this.#previews.start();
  }

  #decodeCommandsRegister(): void {
    const { commands, decode, logger } = this.#deps;
    this.#withdraw.push(
      commands.register({
        name: 'decode.status',
        description: 'Decoders, their consumers (outputs), hardware or software, fps, drops and queue depth.',
        handler: () => decode.status(),
      }),
      commands.register({
        name: 'decode.shared',
        description:
          'Turn shared decoding on or off at run time ({"on": true|false}); applies to sources opened from now on.',
        handler: (args) => {
          const on = sharedArg(args);
          decode.setSharedDecode(on);
          logger.info({ shared: on }, `shared decoding turned ${on ? 'on' : 'off'}`);
          return { sharedDecode: on };
        },
      }),
      commands.register({
        name: 'decode.maxDecoders',
        description: 'Set the most decoders running at once ({"max": 1-64}); running decoders are kept.',
        handler: (args) => {
          const max = maxDecodersArg(args);
          decode.setMaxDecoders(max);
          logger.info({ maxDecoders: max }, `at most ${max} decoders from now on`);
          return { maxDecoders: max };
        },
      }),
    );
  }

  #playCommandsRegister(): void {
    const { commands } = this.#deps;
    this.#withdraw.push(
      commands.register({
        name: 'play',
        description:
          'Play a media file (a name or a path in the media directory) or an http(s)/rtsp(s) URL on outputs ({"source", "outputs"?: all, "hw"?, "startSeconds"?}) until stop or the next schedule change.',
        handler: (args) => this.#play(args),
      }),
      commands.register({
        name: 'stop',
        description: 'Stop what the play command started on outputs ({"outputs"?: all}); the demo or content returns.',
        handler: (args) => this.#stop(args),
      }),
    );
  }

  #driven(): string[] {
    return this.#screens?.outputs().map((o) => o.name) ?? [];
  }

  /** The play command: the source policy decides what may be opened, then the outputs switch to it. */
  async #play(args: Record<string, unknown>) {
    const { config, decode, bus, logger } = this.#deps;
    if (!this.#screens) throw new CommandError('ERR_NOT_READY', 'no outputs yet: the display has not started');
    const target = this.#screens;
    const options = playOptions(args);
    const outputs = outputsArg(args.outputs, 'play', this.#driven());
    const { source } = sourceCheck(args.source, mediaDirs(config.dataDir));
    const consumer = `play#${++this.#manualSerial}`;
    // Opened off the JavaScript thread and prerolled up to its first decoded frame: the outputs
    // switch at a vblank from the old picture straight to the new one, and a source that never
    // yields a picture is answered with its error while the outputs keep what they showed.
    try {
      await acquireFirstPicture(decode, consumer, {
        source,
        hw: options.hw ?? config.decode.hardware,
        ...(options.startSeconds !== undefined ? { startSeconds: options.startSeconds } : {}),
      });
    } catch (error) {
      const e = error as FirstPictureError;
      logger.warn(
        { outputs, source, code: e.code },
        `not playing ${source}: ${e.detail}; the outputs keep what they showed`,
      );
      throw new CommandError(e.code, e.detail);
    }
    if (this.#screens !== target) {
      releaseQuietly(decode, consumer);
      throw new CommandError('ERR_NOT_READY', 'the outputs changed while the source was opened; nothing switched');
    }
    this.#demo.claim(outputs);
    this.#manualRelease(outputs);
    target.play(
      decode,
      consumer,
      outputs.map((output) => ({ output })),
    );
    for (const output of outputs) {
      this.#manual.set(output, consumer);
      bus.emit('playback.changed', { output, source, reason: 'play command' });
    }
    const decoder = decode.status().decoders.find((d) => d.consumers.includes(consumer));
    logger.info({ outputs, source, decoder: decoder?.id }, `playing ${source} on ${outputs.join(', ')}`);
    return { outputs, source, decoder: decoder?.id ?? null };
  }

  /** The stop command: what play started goes, and the demo (or content) gets the outputs back. */
  #stop(args: Record<string, unknown>) {
    const outputs = outputsArg(args.outputs, 'stop', this.#driven()).filter((o) => this.#manual.has(o));
    this.#giveBack(outputs, 'stop command');
    return { stopped: outputs };
  }

  /**
   * A source the play command started failed mid-stream: its outputs keep their last frame for
   * FAILED_HOLD_MS, then go back to the demo (or content) as after `stop`, never to black.
   */
  #playFailed(failed: BusEvents['decode.failed']): void {
    const consumers = new Set(this.#manual.values());
    const { decode } = this.#deps;
    const consumer = decode
      .status()
      .decoders.find((d) => d.id === failed.decoder)
      ?.consumers.find((c) => consumers.has(c));
    const held = consumer ?? [...consumers].find((c) => failed.outputs.some((o) => this.#manual.get(o) === c));
    if (held === undefined || this.#failedHolds.has(held)) return;
    const timer = setTimeout(() => {
      this.#failedHolds.delete(held);
      const outputs = [...this.#manual].filter(([, c]) => c === held).map(([o]) => o);
      if (outputs.length === 0) return;
      this.#deps.logger.warn(
        { outputs, source: failed.source, code: failed.code },
        `${failed.source} failed (${failed.code}); ${outputs.join(', ')} back to the demo or content after ${this.#deps.failedHoldMs ?? FAILED_HOLD_MS} ms on the last frame`,
      );
      this.#giveBack(outputs, `source failed: ${failed.code}`);
    }, this.#deps.failedHoldMs ?? FAILED_HOLD_MS);
    timer.unref();
    this.#failedHolds.set(held, timer);
  }

  /** What play started goes from these outputs, and the demo (or content) gets them back. */
  #giveBack(outputs: readonly string[], reason: string): void {
    this.#manualRelease(outputs);
    // Told before the demo fills: its own change (the demo's source) must be the last word.
    for (const output of outputs) this.#deps.bus.emit('playback.changed', { output, source: null, reason });
    this.#demo.unclaim(outputs);
    this.#demo.fill(this.#screens);
  }

  /** The outputs leave their play consumers; a consumer no output shows any more is released. */
  #manualRelease(outputs: readonly string[]): void {
    const consumers = new Set(outputs.map((o) => this.#manual.get(o)).filter((c): c is string => c !== undefined));
    for (const o of outputs) this.#manual.delete(o);
    const shown = new Set(this.#manual.values());
    for (const consumer of consumers) {
      if (shown.has(consumer)) continue;
      releaseQuietly(this.#deps.decode, consumer);
      clearTimeout(this.#failedHolds.get(consumer));
      this.#failedHolds.delete(consumer);
    }
  }

  /** The periodic summary, the quick fallback check and the per-output counters. */
  #timersStart(): void {
    const { decode, bus } = this.#deps;
    const summary = (): void => this.#watch.summary(decode.status(), this.#screens?.stats() ?? []);
    // The counters go out as soon as every output shows its first frame (outputs of one
    // source start a vblank or two apart: a report in between would call the later one
    // "no content"). An output with nothing to play never will: the 5 s round reports then.
    let polls = 0;
    const firstFrameWatch = setInterval(() => {
      const outputs = this.#screens?.stats() ?? [];
      const all = outputs.length > 0 && outputs.every((o) => o.frames > 0);
      if (all) {
        // What plays where, with the counters: status and health know it from the first frame.
        bus.emit('decode.status', { status: decode.status() });
        bus.emit('output.stats', { outputs });
      }
      if (all || ++polls >= FIRST_FRAME_POLLS) clearInterval(firstFrameWatch);
    }, FIRST_FRAME_POLL_MS);
    this.#timers = [
      firstFrameWatch,
      setTimeout(summary, STATUS_FIRST_MS),
      setInterval(summary, STATUS_EVERY_MS),
      setInterval(() => this.#watch.check(decode.status().decoders), this.#deps.failureCheckMs ?? FALLBACK_CHECK_MS),
      setInterval(() => {
        if (this.#screens) bus.emit('output.stats', { outputs: this.#screens.stats() });
      }, OUTPUT_STATS_MS),
    ];
    for (const timer of this.#timers) timer.unref();
  }
}
