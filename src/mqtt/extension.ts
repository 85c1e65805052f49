import type { IPublishPacket } from 'mqtt';
import type { Config } from '../config/schema.ts';
import type { ContentSync } from '../content/sync-job.ts';
import type { Logger } from '../log/logger.ts';
import type { LogRing } from '../log/ring.ts';
import type { DecodeStatus } from '../native/addon.ts';
import { RateLimiter } from '../rate-limit.ts';
import { type StatusDocument, StatusTracker } from '../status/status.ts';
import type { EventBus } from '../supervisor/bus.ts';
import type { CommandRegistry } from '../supervisor/commands.ts';
import type { Extension } from '../supervisor/extension.ts';
import type { FirmwareUpdate } from '../update/job.ts';
import { brokerName } from './broker-name.ts';
import { builtinCommandsRegister } from './builtin-commands.ts';
import { CommandRouter, type ReplyPayload, type ReplyTarget } from './command-router.ts';
import { type Backoff, type LastWill, MqttConnection, type PublishOptions } from './connection.ts';
import type { Contract } from './contract.ts';
import { DesiredConfig, DesiredQueue, type ReportedConfig, reportEvent } from './desired-config.ts';
import { type DeviceEvent, eventSourcesAttach } from './events.ts';
import { OfflineBuffers } from './offline-buffers.ts';
import { ProofPublisher, proofCursorFile } from './proof-of-play-publish.ts';
import { replyEncode, replyOptions } from './reply-send.ts';
import { sessionNext } from './session-counter.ts';
import { TelemetrySampler } from './telemetry.ts';
import { type DeviceTopics, deviceTopics, topicParse } from './topics.ts';

const STATUS_DEBOUNCE_MS = 250;
/**
 * Job documents are retained so a dashboard that subscribes mid-sync sees where a job stands,
 * and expire (MQTT v5 Message Expiry) so finished jobs do not pile up in the broker forever.
 */
const JOB_RETAIN_S = 86_400;
const JOB_OPTIONS: PublishOptions = { qos: 1, retain: true, properties: { messageExpiryInterval: JOB_RETAIN_S } };

/** The parts of the MQTT extension that would touch the machine; tests replace them. */
export interface MqttSettings {
  /** Ends the supervisor so the service manager starts it again (`restart` command). */
  readonly restart: () => void;
  /** Where the `reboot` command writes its request for the root multihead-reboot.path. */
  readonly runDir: string;
  /** The configuration from the lower layers plus a desired layer; throws ConfigError. */
  readonly reload: (desired: Record<string, unknown>) => Config;
  readonly backoff: Backoff;
  readonly thermalDir: string;
  readonly procDir: string;
  readonly sessionExpiryS: number;
  /** Time for a reply to leave before restart/reboot act. */
  readonly graceMs: number;
  /** Per command: burst, then per second. */
  readonly rate: { burst: number; perSecond: number };
  readonly startedAt: number;
}

export interface MqttExtensionDeps extends MqttSettings {
  readonly config: Config;
  readonly logger: Logger;
  readonly bus: EventBus;
  readonly commands: CommandRegistry;
  readonly logRing: LogRing;
  readonly contract: Contract;
  /** For the status document. */
  readonly versions: StatusDocument['versions'];
}

/** The `state` document: birth, last will and the orderly goodbye. */
function statePayload(state: 'online' | 'offline', session: number, reason?: string) {
  return {
    state,
    session,
    ...(state === 'online' || reason ? { at: new Date().toISOString() } : {}),
    ...(reason ? { reason } : {}),
  };
}

/**
 * The fleet transport (docs/mqtt.md): birth and last will, retained status, telemetry, events,
 * desired/reported configuration and commands with replies. Commands are looked up in the
 * shared CommandRegistry; this extension offers only the generic ones (ping, config.get,
 * logs.get, restart, reboot). Playback never waits for it: start() returns at once and the
 * broker is reached in the background. What cannot be published while the broker is away
 * waits in bounded buffers.
 */
export class MqttExtension implements Extension {
  readonly name = 'mqtt';
  readonly #deps: MqttExtensionDeps;
  readonly #topics: DeviceTopics;
  readonly #withdraw: Array<() => void> = [];
  readonly #offline = new OfflineBuffers();
  readonly #eventLimiter = new RateLimiter({ burst: 30, perSecond: 10 });
  readonly #tracker: StatusTracker;
  readonly #desired: DesiredConfig;
  readonly #sampler: TelemetrySampler;
  readonly #router: CommandRouter;
  readonly #desiredQueue: DesiredQueue;
  #connection: MqttConnection | undefined;
  #session = 0;
  #sessionProblemSaid = false;
  #eventsDropped = 0;
  #telemetryTimer: NodeJS.Timeout | undefined;
  #statusTimer: NodeJS.Timeout | undefined;
  readonly #proof: ProofPublisher;

  constructor(deps: MqttExtensionDeps) {
    this.#deps = deps;
    const { config, bus, versions, startedAt } = deps;
    this.#topics = deviceTopics(config.mqtt.prefix, config.device.id, config.device.groups);
    this.#tracker = new StatusTracker({ bus, config, versions, startedAt });
    this.#desired = this.#desiredCreate();
    this.#sampler = this.#samplerCreate();
    this.#router = this.#routerCreate();
    this.#proof = new ProofPublisher({
      commands: deps.commands,
      publish: (text) => this.#connection?.publishAcked(this.#topics.proofOfPlay, text) ?? Promise.resolve(false),
      cursorFile: proofCursorFile(config.dataDir),
      logger: deps.logger,
    });
    // Bounded: of the messages waiting, only the newest is handled.
    this.#desiredQueue = new DesiredQueue((payload) => this.#desiredApply(payload), deps.logger);
  }

  async start(): Promise<void> {
    const { config, logger } = this.#deps;
    this.#withdraw.push(this.#commandsRegister());
    await this.#desiredBoot();
    if (config.mqtt.url === '') {
      logger.info('MQTT off: mqtt.url is empty');
      return;
    }
    this.#sourcesAttach();
    if (!this.#connect()) return;
    this.#telemetrySchedule(this.#desired.effective.mqtt.telemetryIntervalS);
    const broker = brokerName(config.mqtt.url);
    logger.info({ broker, root: this.#topics.root }, `MQTT fleet contract on ${this.#topics.root}/ via ${broker}`);
  }

  async stop(): Promise<void> {
    clearInterval(this.#telemetryTimer);
    clearTimeout(this.#statusTimer);
    for (const withdraw of this.#withdraw.splice(0)) withdraw();
    this.#tracker.close();
    const goodbye = JSON.stringify(statePayload('offline', this.#session, 'stopped'));
    await this.#connection?.stop({ topic: this.#topics.state, payload: goodbye });
    this.#connection = undefined;
  }

  // Connection: last will, birth, incoming messages.

  /** Starts the connection; false (and no connection) when the broker settings cannot be used. */
  #connect(): boolean {
    const { config, logger, backoff, sessionExpiryS, bus } = this.#deps;
    this.#connection = new MqttConnection({
      broker: config.mqtt,
      clientId: `multihead-${config.device.id}`,
      logger,
      backoff,
      sessionExpiryS,
      subscriptions: this.#topics.subscriptions,
      beforeConnect: () => this.#lastWill(),
      onConnect: () => this.#birth(),
      onDisconnect: (reason) => bus.emit('mqtt.connection', { connected: false, session: this.#session, reason }),
      onState: (state) => bus.emit('mqtt.broker', state),
      onMessage: (topic, payload, packet) => this.#message(topic, payload, packet),
    });
    if (this.#connection.start()) return true;
    this.#connection = undefined;
    return false;
  }

  /** Every attempt is a new session number, so consumers can tell a reconnect from a late message. */
  #lastWill(): LastWill {
    const { config, logger } = this.#deps;
    try {
      this.#session = sessionNext(config.dataDir);
    } catch (error) {
      // Still counts up within this run; consumers may see a number again after a restart.
      this.#session++;
      if (!this.#sessionProblemSaid) {
        logger.error(
          { code: 'ERR_SESSION_PERSIST', dataDir: config.dataDir },
          `cannot save the MQTT session counter in ${config.dataDir}: ${(error as Error).message}`,
        );
        this.#sessionProblemSaid = true;
      }
    }
    return { topic: this.#topics.state, payload: JSON.stringify({ state: 'offline', session: this.#session }) };
  }

  /**
   * Birth, then everything retained, then what waited: a consumer that sees `online` finds
   * status and reported config current right after it.
   */
  #birth(): void {
    const { logger, bus } = this.#deps;
    const firmware = bus.latest('firmware.status');
    this.#publish(
      this.#topics.state,
      { ...statePayload('online', this.#session), ...(firmware ? { firmware } : {}) },
      {
        retain: true,
      },
    );
    this.#statusPublish();
    this.#reportedPublish(this.#desired.report);
    this.#offlineFlush();
    this.#proof.kick();
    if (this.#eventsDropped > 0) {
      logger.warn({ dropped: this.#eventsDropped }, `${this.#eventsDropped} event(s) dropped by the events rate limit`);
      this.#eventsDropped = 0;
    }
    bus.emit('mqtt.connection', { connected: true, session: this.#session });
  }

  #message(topic: string, payload: Buffer, packet: IPublishPacket): void {
    const { config } = this.#deps;
    const target = topicParse(topic, config.mqtt.prefix, config.device.id, config.device.groups);
    if (target.kind === 'desired') this.#desiredQueue.push(payload);
    else if (target.kind === 'command') void this.#router.handle(target.command, topic, payload, packet);
  }

  #publish(topic: string, payload: unknown, options?: PublishOptions): boolean {
    return this.#connection?.publish(topic, JSON.stringify(payload), options) ?? false;
  }

  // Offline buffers: sent as they were once the broker is back; a send that fails then is dropped.

  #offlineFlush(): void {
    const publish = (topic: string, text: string, options: PublishOptions): void => {
      this.#connection?.publish(topic, text, options);
    };
    this.#offline.flush({
      job: (jobId, text) => publish(this.#topics.job(jobId), text, JOB_OPTIONS),
      event: (text) => publish(this.#topics.events, text, { qos: 1 }),
      telemetry: (text) => publish(this.#topics.telemetry, text, { qos: 0 }),
      reply: (target, text) => void this.#replyPublish(target, text),
    });
  }

  // Status: retained, republished (debounced) whenever the tracker's document changes.

  #statusPublish(): void {
    clearTimeout(this.#statusTimer);
    this.#statusTimer = undefined;
    this.#publish(this.#topics.status, this.#tracker.document(), { retain: true });
  }

  #statusSchedule(): void {
    this.#statusTimer ??= setTimeout(() => this.#statusPublish(), STATUS_DEBOUNCE_MS);
  }

  // Events and jobs: what the bus and the log report, while attached.

  #sourcesAttach(): void {
    const { bus, logRing } = this.#deps;
    this.#withdraw.push(
      this.#tracker.onChange(() => this.#statusSchedule()),
      eventSourcesAttach({ bus, logRing, emit: (event) => this.#eventSend(event) }),
      bus.on('content.sync', (doc) => this.#jobSend(doc)),
      bus.on('firmware.update', (doc) => this.#jobSend(doc)),
      bus.on('proofOfPlay.appended', () => this.#proof.kick()),
    );
  }

  /** Rate limited: a storm of errors costs a count in the log, not the broker's or the fleet's attention. */
  #eventSend(event: DeviceEvent): void {
    if (!this.#eventLimiter.take('events')) {
      this.#eventsDropped++;
      return;
    }
    const text = JSON.stringify(event);
    if (!this.#connection?.publish(this.#topics.events, text, { qos: 1 })) this.#offline.event(text);
  }

  #jobSend(doc: ContentSync | FirmwareUpdate): void {
    const text = JSON.stringify(doc);
    if (this.#connection?.publish(this.#topics.job(doc.jobId), text, JOB_OPTIONS)) return;
    this.#offline.job(doc.jobId, text);
  }

  // Telemetry: sampled on an interval that a desired config can change live.

  #samplerCreate(): TelemetrySampler {
    const { thermalDir, procDir, startedAt, bus } = this.#deps;
    return new TelemetrySampler({
      thermalDir,
      procDir,
      startedAt,
      session: () => this.#session,
      decodeStatus: () => this.#decodeStatus(),
      outputStats: () => bus.latest('output.stats')?.outputs,
    });
  }

  /** The decode.status command when some extension offers it, else the newest bus event. */
  async #decodeStatus(): Promise<DecodeStatus | undefined> {
    const { commands } = this.#deps;
    if (commands.has('decode.status')) {
      const reply = await commands.invoke('decode.status', {}, { transport: 'internal', from: 'telemetry' });
      if (reply.ok) return reply.result as DecodeStatus;
    }
    return this.#tracker.decodeStatus;
  }

  async #telemetrySend(): Promise<void> {
    try {
      const text = JSON.stringify(await this.#sampler.sample());
      if (!this.#connection?.publish(this.#topics.telemetry, text, { qos: 0 })) this.#offline.telemetry(text);
    } catch (error) {
      this.#deps.logger.warn({ err: error }, `telemetry sample failed: ${(error as Error).message}`);
    }
  }

  #telemetrySchedule(seconds: number): void {
    clearInterval(this.#telemetryTimer);
    this.#telemetryTimer = setInterval(() => void this.#telemetrySend(), seconds * 1000);
    this.#telemetryTimer.unref();
  }

  // Desired configuration: saved layer at boot, then the newest message from the fleet.

  #desiredCreate(): DesiredConfig {
    const { contract, config, reload, commands, bus, logger, restart, graceMs } = this.#deps;
    return new DesiredConfig({
      contract,
      dataDir: config.dataDir,
      reload,
      initial: config,
      commands,
      bus,
      logger,
      // A desired config that changes connectivity is tried in a fresh start (src/mqtt/desired-trial.ts).
      restart,
      restartDelayMs: graceMs,
      localAppliers: {
        'mqtt.telemetryIntervalS': async (seconds) => {
          this.#telemetrySchedule(seconds as number);
          return true;
        },
      },
    });
  }

  async #desiredBoot(): Promise<void> {
    const { logger } = this.#deps;
    const booted = await this.#desired.boot();
    this.#tracker.configVersionSet(this.#desired.appliedVersion);
    if (booted?.restartRequired.length) {
      logger.warn(
        { restartRequired: booted.restartRequired },
        `saved desired config version ${booted.version}: ${booted.restartRequired.join(', ')} not in effect until restart`,
      );
    }
  }

  async #desiredApply(payload: Uint8Array): Promise<void> {
    const report = await this.#desired.handle(payload);
    this.#reportedPublish(report);
    this.#eventSend(reportEvent(report));
  }

  #reportedPublish(report: ReportedConfig | undefined): void {
    if (report) this.#publish(this.#topics.reported, report, { retain: true });
  }

  // Commands: the built-in ones, and requests from the fleet with their one reply each.

  #commandsRegister(): () => void {
    const { commands, config, startedAt, logRing, restart, runDir, graceMs, logger } = this.#deps;
    return builtinCommandsRegister({
      commands,
      deviceId: config.device.id,
      session: () => this.#session,
      startedAt,
      effectiveConfig: () => this.#desired.effective,
      appliedVersion: () => this.#desired.appliedVersion,
      logRing,
      restart,
      runDir,
      graceMs,
      logger,
    });
  }

  #routerCreate(): CommandRouter {
    const { contract, commands, config, logger, rate } = this.#deps;
    return new CommandRouter({
      contract,
      commands,
      deviceId: config.device.id,
      prefix: config.mqtt.prefix,
      logger,
      rate,
      reply: (target, body) => this.#replySend(target, body),
      unanswered: (command, error, from) => this.#unanswered(command, error, from),
    });
  }

  #unanswered(command: string, error: { code: string; message: string }, from: string): void {
    const { prefix } = this.#deps.config.mqtt;
    this.#eventSend({
      type: 'command.unanswered',
      severity: 'warn',
      at: new Date().toISOString(),
      message: `${command} from ${from} has no usable reply address (MQTT v5 Response Topic or "replyTo" under ${prefix}/replies/): ${error.code} ${error.message}`,
      details: { command, topic: from, code: error.code },
    });
  }

  #replySend(target: ReplyTarget, body: ReplyPayload): void {
    const text = replyEncode(body);
    if (!this.#replyPublish(target, text)) this.#offline.reply(target, text);
  }

  /** True when the reply is sent or no longer wanted (its request expired); false: keep it for later. */
  #replyPublish(target: ReplyTarget, text: string): boolean {
    const options = replyOptions(target, Date.now());
    if (!options) {
      this.#deps.logger.info({ topic: target.topic }, `reply to ${target.topic} dropped: its request expired`);
      return true;
    }
    return this.#connection?.publish(target.topic, text, options) ?? false;
  }
}
