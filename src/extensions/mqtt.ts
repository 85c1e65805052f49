import { configLoad } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import type { ContentSync } from '../content/sync-job.ts';
import { builtinCommandsRegister } from '../mqtt/builtin-commands.ts';
import { CommandRouter, type ReplyPayload, type ReplyTarget } from '../mqtt/command-router.ts';
import { type Backoff, brokerName, MqttConnection, type PublishOptions } from '../mqtt/connection.ts';
import { type Contract, contractLoad } from '../mqtt/contract.ts';
import { DesiredConfig, DesiredQueue, type ReportedConfig, reportEvent } from '../mqtt/desired-config.ts';
import { type DeviceEvent, eventSourcesAttach } from '../mqtt/events.ts';
import { runDirFromEnv } from '../mqtt/reboot-request.ts';
import { sessionNext } from '../mqtt/session-counter.ts';
import { TelemetrySampler } from '../mqtt/telemetry.ts';
import { deviceTopics, topicParse } from '../mqtt/topics.ts';
import type { DecodeStatus } from '../native/addon.ts';
import { RateLimiter } from '../rate-limit.ts';
import { StatusTracker } from '../status/status.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';
import { appVersion } from '../version.ts';

/** What the MQTT extension takes from its surroundings; tests replace the parts that would touch the machine. */
export interface MqttDeps {
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
  readonly contract?: Contract;
}

/** Bounded offline buffers: a long outage costs at most this many messages of memory. */
const OFFLINE_EVENTS = 100;
const OFFLINE_TELEMETRY = 10;
const OFFLINE_REPLIES = 100;
const STATUS_DEBOUNCE_MS = 250;
/** Jobs whose newest document waits for the broker; older jobs' documents are dropped first. */
const OFFLINE_JOBS = 20;
/**
 * Job documents are retained so a dashboard that subscribes mid-sync sees where a job stands,
 * and expire (MQTT v5 Message Expiry) so finished jobs do not pile up in the broker forever.
 */
const JOB_RETAIN_S = 86_400;

export function mqttDefaults(): MqttDeps {
  return {
    // An orderly stop (offline published, outputs released); systemd's Restart=always starts
    // the service again, while `systemctl stop` still stops it for good.
    restart: () => process.kill(process.pid, 'SIGTERM'),
    runDir: runDirFromEnv(),
    // The same layers as at start (file from MULTIHEAD_CONFIG or the default path, environment).
    reload: (desired) => configLoad({ desired }).config,
    backoff: { initialMs: 1000, maxMs: 60_000 },
    thermalDir: '/sys/class/thermal',
    procDir: '/proc',
    sessionExpiryS: 3600,
    graceMs: 500,
    rate: { burst: 20, perSecond: 5 },
    startedAt: Date.now(),
  };
}

/**
 * The fleet transport (docs/mqtt.md): birth and last will, retained status, telemetry, events,
 * desired/reported configuration and commands with replies. Commands are looked up in the
 * shared CommandRegistry; this extension offers only the generic ones (ping, config.get,
 * logs.get, restart, reboot). Playback never waits for it: start() returns at once and the
 * broker is reached in the background.
 */
export function mqttCreate(context: ExtensionContext, overrides: Partial<MqttDeps> = {}): Extension {
  const deps: MqttDeps = { ...mqttDefaults(), ...overrides };
  const { config, logger, bus, commands, addon, logRing } = context;
  const topics = deviceTopics(config.mqtt.prefix, config.device.id, config.device.groups);
  const offs: Array<() => void> = [];
  let connection: MqttConnection | undefined;
  let session = 0;
  let telemetryTimer: NodeJS.Timeout | undefined;
  let statusTimer: NodeJS.Timeout | undefined;
  const offline = {
    events: [] as string[],
    telemetry: [] as string[],
    replies: [] as Array<[ReplyTarget, string]>,
    /** Newest document per job id (a job's older progress is worthless once a newer one exists). */
    jobs: new Map<string, string>(),
  };
  const eventLimiter = new RateLimiter({ burst: 30, perSecond: 10 });
  let eventsDropped = 0;

  const contract = deps.contract ?? contractLoad();
  const tracker = new StatusTracker({
    bus,
    config,
    versions: { app: appVersion, addon: addon.version(), node: process.version },
    startedAt: deps.startedAt,
  });
  const desired = new DesiredConfig({
    contract,
    dataDir: config.dataDir,
    reload: deps.reload,
    initial: config,
    commands,
    bus,
    logger,
    // A desired config that changes connectivity is tried in a fresh start (src/mqtt/desired-trial.ts).
    restart: deps.restart,
    restartDelayMs: deps.graceMs,
    localAppliers: {
      'mqtt.telemetryIntervalS': async (seconds) => {
        telemetrySchedule(seconds as number);
        return true;
      },
    },
  });
  const sampler = new TelemetrySampler({
    thermalDir: deps.thermalDir,
    procDir: deps.procDir,
    startedAt: deps.startedAt,
    session: () => session,
    decodeStatus: async (): Promise<DecodeStatus | undefined> => {
      if (commands.has('decode.status')) {
        const reply = await commands.invoke('decode.status', {}, { transport: 'internal', from: 'telemetry' });
        if (reply.ok) return reply.result as DecodeStatus;
      }
      return tracker.decodeStatus;
    },
    outputStats: () => bus.latest('output.stats')?.outputs,
  });

  const publish = (topic: string, payload: unknown, options?: PublishOptions): boolean =>
    connection?.publish(topic, JSON.stringify(payload), options) ?? false;
  const bounded = <T>(queue: T[], item: T, max: number): void => {
    queue.push(item);
    if (queue.length > max) queue.shift();
  };

  const eventSend = (event: DeviceEvent): void => {
    if (!eventLimiter.take('events')) {
      eventsDropped++;
      return;
    }
    const text = JSON.stringify(event);
    if (!connection?.publish(topics.events, text, { qos: 1 })) bounded(offline.events, text, OFFLINE_EVENTS);
  };
  const statePayload = (state: 'online' | 'offline', reason?: string) => ({
    state,
    session,
    ...(state === 'online' || reason ? { at: new Date().toISOString() } : {}),
    ...(reason ? { reason } : {}),
  });
  const statusPublish = (): void => {
    clearTimeout(statusTimer);
    statusTimer = undefined;
    publish(topics.status, tracker.document(), { retain: true });
  };
  const reportedPublish = (report: ReportedConfig | undefined): void => {
    if (report) publish(topics.reported, report, { retain: true });
  };
  const telemetrySend = async (): Promise<void> => {
    try {
      const text = JSON.stringify(await sampler.sample());
      if (!connection?.publish(topics.telemetry, text, { qos: 0 })) {
        bounded(offline.telemetry, text, OFFLINE_TELEMETRY);
      }
    } catch (error) {
      logger.warn({ err: error }, `telemetry sample failed: ${(error as Error).message}`);
    }
  };
  const telemetrySchedule = (seconds: number): void => {
    clearInterval(telemetryTimer);
    telemetryTimer = setInterval(() => void telemetrySend(), seconds * 1000);
    telemetryTimer.unref();
  };
  const replySend = (target: ReplyTarget, body: ReplyPayload): void => {
    let text: string;
    try {
      text = JSON.stringify(body);
    } catch (error) {
      text = JSON.stringify({
        ...(body.id !== undefined ? { id: body.id } : {}),
        device: body.device,
        command: body.command,
        ok: false,
        error: { code: 'ERR_INTERNAL', message: `reply could not be encoded: ${(error as Error).message}` },
      });
    }
    if (!replyPublish(target, text)) bounded(offline.replies, [target, text], OFFLINE_REPLIES);
  };
  /** A reply outlives its request by nothing: it carries what is left of the request's expiry, and is dropped once that is gone. */
  const replyPublish = (target: ReplyTarget, text: string): boolean => {
    const leftS = target.expiresAt === undefined ? undefined : Math.ceil((target.expiresAt - Date.now()) / 1000);
    if (leftS !== undefined && leftS <= 0) {
      logger.info({ topic: target.topic }, `reply to ${target.topic} dropped: its request expired`);
      return true;
    }
    const properties = {
      ...(target.correlationData ? { correlationData: target.correlationData } : {}),
      ...(leftS !== undefined ? { messageExpiryInterval: leftS } : {}),
    };
    return connection?.publish(target.topic, text, { qos: 1, properties }) ?? false;
  };

  const jobOptions: PublishOptions = { qos: 1, retain: true, properties: { messageExpiryInterval: JOB_RETAIN_S } };
  const jobSend = (doc: ContentSync): void => {
    const text = JSON.stringify(doc);
    if (connection?.publish(topics.job(doc.jobId), text, jobOptions)) return;
    offline.jobs.delete(doc.jobId);
    offline.jobs.set(doc.jobId, text);
    for (const oldest of offline.jobs.keys()) {
      if (offline.jobs.size <= OFFLINE_JOBS) break;
      offline.jobs.delete(oldest);
    }
  };

  const router = new CommandRouter({
    contract,
    commands,
    deviceId: config.device.id,
    prefix: config.mqtt.prefix,
    logger,
    rate: deps.rate,
    reply: replySend,
    unanswered: (command, error, from) =>
      eventSend({
        type: 'command.unanswered',
        severity: 'warn',
        at: new Date().toISOString(),
        message: `${command} from ${from} has no usable reply address (MQTT v5 Response Topic or "replyTo" under ${config.mqtt.prefix}/replies/): ${error.code} ${error.message}`,
        details: { command, topic: from, code: error.code },
      }),
  });

  // Bounded: of the messages waiting, only the newest is handled.
  const desiredQueue = new DesiredQueue(async (payload) => {
    const report = await desired.handle(payload);
    reportedPublish(report);
    eventSend(reportEvent(report));
  }, logger);
  const desiredHandle = (payload: Buffer): void => desiredQueue.push(payload);

  const onConnect = (): void => {
    // Birth, then everything retained, then what waited: a consumer that sees `online`
    // finds status and reported config current right after it.
    publish(topics.state, statePayload('online'), { retain: true });
    statusPublish();
    reportedPublish(desired.report);
    for (const [jobId, text] of offline.jobs) connection?.publish(topics.job(jobId), text, jobOptions);
    offline.jobs.clear();
    for (const text of offline.events.splice(0)) connection?.publish(topics.events, text, { qos: 1 });
    for (const text of offline.telemetry.splice(0)) connection?.publish(topics.telemetry, text, { qos: 0 });
    for (const [target, text] of offline.replies.splice(0)) replyPublish(target, text);
    if (eventsDropped > 0) {
      logger.warn({ dropped: eventsDropped }, `${eventsDropped} event(s) dropped by the events rate limit`);
      eventsDropped = 0;
    }
    bus.emit('mqtt.connection', { connected: true, session });
  };

  return {
    name: 'mqtt',
    async start() {
      offs.push(
        builtinCommandsRegister({
          commands,
          deviceId: config.device.id,
          session: () => session,
          startedAt: deps.startedAt,
          effectiveConfig: () => desired.effective,
          appliedVersion: () => desired.appliedVersion,
          logRing,
          restart: deps.restart,
          runDir: deps.runDir,
          graceMs: deps.graceMs,
          logger,
        }),
      );
      const booted = await desired.boot();
      tracker.configVersionSet(desired.appliedVersion);
      if (booted?.restartRequired.length) {
        logger.warn(
          { restartRequired: booted.restartRequired },
          `saved desired config version ${booted.version}: ${booted.restartRequired.join(', ')} not in effect until restart`,
        );
      }
      if (config.mqtt.url === '') {
        logger.info('MQTT off: mqtt.url is empty');
        return;
      }
      offs.push(
        tracker.onChange(() => {
          statusTimer ??= setTimeout(statusPublish, STATUS_DEBOUNCE_MS);
        }),
        eventSourcesAttach({ bus, logRing, emit: eventSend }),
        bus.on('content.sync', jobSend),
      );
      let sessionProblemSaid = false;
      connection = new MqttConnection({
        broker: config.mqtt,
        clientId: `multihead-${config.device.id}`,
        logger,
        backoff: deps.backoff,
        sessionExpiryS: deps.sessionExpiryS,
        subscriptions: topics.subscriptions,
        beforeConnect: () => {
          try {
            session = sessionNext(config.dataDir);
          } catch (error) {
            // Still counts up within this run; consumers may see a number again after a restart.
            session++;
            if (!sessionProblemSaid) {
              logger.error(
                { code: 'ERR_SESSION_PERSIST', dataDir: config.dataDir },
                `cannot save the MQTT session counter in ${config.dataDir}: ${(error as Error).message}`,
              );
              sessionProblemSaid = true;
            }
          }
          return { topic: topics.state, payload: JSON.stringify({ state: 'offline', session }) };
        },
        onConnect,
        onDisconnect: (reason) => bus.emit('mqtt.connection', { connected: false, session, reason }),
        onMessage: (topic, payload, packet) => {
          const target = topicParse(topic, config.mqtt.prefix, config.device.id, config.device.groups);
          if (target.kind === 'desired') desiredHandle(payload);
          else if (target.kind === 'command') void router.handle(target.command, topic, payload, packet);
        },
      });
      if (!connection.start()) {
        connection = undefined;
        return;
      }
      telemetrySchedule(desired.effective.mqtt.telemetryIntervalS);
      logger.info(
        { broker: brokerName(config.mqtt.url), root: topics.root },
        `MQTT fleet contract on ${topics.root}/ via ${brokerName(config.mqtt.url)}`,
      );
    },
    async stop() {
      clearInterval(telemetryTimer);
      clearTimeout(statusTimer);
      for (const off of offs.splice(0)) off();
      tracker.close();
      await connection?.stop({ topic: topics.state, payload: JSON.stringify(statePayload('offline', 'stopped')) });
      connection = undefined;
    },
  };
}
