import type { Config } from '../config/schema.ts';
import type { Screens } from '../display/screens.ts';
import type { Logger } from '../log/logger.ts';
import type { DecodeManager } from '../native/addon.ts';
import type { BusEvents, EventBus } from '../supervisor/bus.ts';
import { CommandError, type CommandRegistry } from '../supervisor/commands.ts';
import type { Extension } from '../supervisor/extension.ts';
import { DecoderWatch } from './decoder-watch.ts';
import { Demo, releaseQuietly } from './demo.ts';
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

export interface PlaybackExtensionDeps {
  readonly config: Pick<Config, 'dataDir' | 'decode' | 'playback' | 'preview'>;
  readonly logger: Logger;
  readonly bus: Pick<EventBus, 'on' | 'emit'>;
  readonly commands: Pick<CommandRegistry, 'register'>;
  /** One decoder per source, shared by every output that shows it; closed at stop. */
  readonly decode: DecodeManager;
  /** The render node (/dev/dri/renderD*) of the GPU behind a card node, if it has one. */
  readonly renderNodeOf: (cardPath: string) => string | undefined;
}

/**
 * What plays. Owns the decode manager. Until content and schedules arrive it plays the built-in
 * demo on every output, KMS or virtual. Offers `play`, `stop`, `decode.status`, `decode.shared`,
 * `decode.maxDecoders` and `screenshot`; reports each decoder's failure and fallback to software
 * once, and keeps JPEG previews.
 */
export class PlaybackExtension implements Extension {
  readonly name = 'playback';
  readonly #deps: PlaybackExtensionDeps;
  readonly #demo: Demo;
  readonly #watch: DecoderWatch;
  readonly #withdraw: Array<() => void> = [];
  #screens: Screens | undefined;
  #previews: Previews | undefined;
  #timers: NodeJS.Timeout[] = [];
  /** Outputs playing a source asked for with the `play` command, and the consumer showing it. */
  readonly #manual = new Map<string, string>();
  #manualSerial = 0;

  constructor(deps: PlaybackExtensionDeps) {
    this.#deps = deps;
    const { config, logger, bus, decode } = deps;
    this.#demo = new Demo({ decode, logger, bus, enabled: config.playback.demo, hw: config.decode.hardware });
    this.#watch = new DecoderWatch({ logger, bus });
  }

  start(): void {
    this.#displayFollow();
    this.#decodeCommandsRegister();
    this.#withdraw.push(this.#deps.commands.register(screenshotCommand({ screens: () => this.#screens })));
    this.#playCommandsRegister();
    this.#timersStart();
  }

  stop(): void {
    for (const w of this.#withdraw.splice(0)) w();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers = [];
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
    // Opened off the JavaScript thread and prerolled: the outputs switch at a vblank
    // from the old picture straight to the new one.
    await decode.acquireAsync(consumer, {
      source,
      hw: options.hw ?? config.decode.hardware,
      preroll: true,
      ...(options.startSeconds !== undefined ? { startSeconds: options.startSeconds } : {}),
    });
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
    this.#manualRelease(outputs);
    this.#demo.unclaim(outputs);
    this.#demo.fill(this.#screens);
    for (const output of outputs)
      this.#deps.bus.emit('playback.changed', { output, source: null, reason: 'stop command' });
    return { stopped: outputs };
  }

  /** The outputs leave their play consumers; a consumer no output shows any more is released. */
  #manualRelease(outputs: readonly string[]): void {
    const consumers = new Set(outputs.map((o) => this.#manual.get(o)).filter((c): c is string => c !== undefined));
    for (const o of outputs) this.#manual.delete(o);
    const shown = new Set(this.#manual.values());
    for (const consumer of consumers) {
      if (!shown.has(consumer)) releaseQuietly(this.#deps.decode, consumer);
    }
  }

  /** The periodic summary, the quick fallback check and the per-output counters. */
  #timersStart(): void {
    const { decode, bus } = this.#deps;
    const summary = (): void => this.#watch.summary(decode.status(), this.#screens?.stats() ?? []);
    this.#timers = [
      setTimeout(summary, STATUS_FIRST_MS),
      setInterval(summary, STATUS_EVERY_MS),
      setInterval(() => this.#watch.check(decode.status().decoders), FALLBACK_CHECK_MS),
      setInterval(() => {
        if (this.#screens) bus.emit('output.stats', { outputs: this.#screens.stats() });
      }, OUTPUT_STATS_MS),
    ];
    for (const timer of this.#timers) timer.unref();
  }
}
