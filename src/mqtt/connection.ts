import { readFileSync } from 'node:fs';
import { connect, type IClientOptions, type IPublishPacket, type ISubscriptionMap, type MqttClient } from 'mqtt';
import type { Logger } from '../log/logger.ts';
import { redactText } from '../log/redact.ts';
import type { BrokerState } from '../supervisor/bus.ts';
import { brokerName } from './broker-name.ts';
import { PAYLOAD_LIMITS } from './payload.ts';
import type { Subscription } from './topics.ts';

export interface BrokerSettings {
  readonly url: string;
  readonly username: string;
  readonly password: string;
  /** PEM file paths; empty: not used. */
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface Backoff {
  /** First retry after about this long; each failure doubles it up to maxMs. */
  readonly initialMs: number;
  readonly maxMs: number;
}

export interface LastWill {
  readonly topic: string;
  readonly payload: string;
}

export interface ConnectionDeps {
  readonly broker: BrokerSettings;
  readonly clientId: string;
  readonly logger: Logger;
  readonly backoff: Backoff;
  /** MQTT v5 session expiry: how long the broker keeps subscriptions and queued QoS 1 requests while we are away. */
  readonly sessionExpiryS: number;
  readonly subscriptions: readonly Subscription[];
  /** Called before every connection attempt; the will it returns goes into that CONNECT. */
  readonly beforeConnect: () => LastWill;
  readonly onConnect: (sessionPresent: boolean) => void;
  readonly onDisconnect: (reason: string) => void;
  /** The connection's state when it changes, from the first attempt on (the installer screen). */
  readonly onState?: (state: BrokerState) => void;
  readonly onMessage: (topic: string, payload: Buffer, packet: IPublishPacket) => void;
}

export interface PublishOptions {
  readonly retain?: boolean;
  readonly qos?: 0 | 1;
  readonly properties?: IPublishPacket['properties'];
}

/**
 * One persistent MQTT v5 session with the fleet broker. It reconnects by itself with jittered
 * exponential backoff (a fleet of devices that lost the broker together must not come back in
 * lockstep), renews the last will before every attempt, and never throws into its caller:
 * every failure is a log line and a retry.
 */
export class MqttConnection {
  readonly #deps: ConnectionDeps;
  #client: MqttClient | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #stopping = false;
  #connected = false;
  #lastError: string | undefined;
  /** The last state told, to tell only changes (a retry failing the same way is not one). */
  #stateTold = '';
  /** The failure of the attempt under way, once its socket or the broker said one. */
  #attemptFailed = false;

  constructor(deps: ConnectionDeps) {
    this.#deps = deps;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Starts connecting in the background; false (and a log line) if the settings cannot work. */
  start(): boolean {
    const { broker, logger } = this.#deps;
    let tls: Pick<IClientOptions, 'ca' | 'cert' | 'key'>;
    try {
      tls = {
        ...(broker.ca ? { ca: readPem(broker.ca, 'mqtt.ca') } : {}),
        ...(broker.cert ? { cert: readPem(broker.cert, 'mqtt.cert') } : {}),
        ...(broker.key ? { key: readPem(broker.key, 'mqtt.key') } : {}),
      };
    } catch (error) {
      logger.error({ code: 'ERR_MQTT_TLS_FILE' }, `MQTT stays off: ${(error as Error).message}`);
      return false;
    }
    const will = this.#deps.beforeConnect();
    const options: IClientOptions = {
      clientId: this.#deps.clientId,
      protocolVersion: 5,
      // A persistent session: requests sent during a short outage are delivered on return.
      clean: false,
      properties: {
        sessionExpiryInterval: this.#deps.sessionExpiryS,
        // The broker drops a bigger message for us instead of sending it: a flood is refused by
        // the protocol, before any of it is in our memory.
        maximumPacketSize: PAYLOAD_LIMITS.packetBytes,
      },
      keepalive: 30,
      connectTimeout: 10_000,
      // Reconnecting is ours (jittered backoff, fresh will per attempt).
      reconnectPeriod: 0,
      // Offline buffering is the caller's, bounded; mqtt.js would queue without limit.
      queueQoSZero: false,
      rejectUnauthorized: true,
      will: willPacket(will),
      ...(broker.username ? { username: broker.username } : {}),
      ...(broker.password ? { password: broker.password } : {}),
      ...tls,
    };
    logger.info(
      { broker: brokerName(broker.url), clientId: this.#deps.clientId, tls: Object.keys(tls) },
      `connecting to MQTT broker ${brokerName(broker.url)}`,
    );
    this.#stateTell({ state: 'connecting', broker: brokerName(broker.url) });
    const client = connect(broker.url, options);
    this.#client = client;
    client.on('connect', (connack) => {
      this.#connected = true;
      this.#stateTell({ state: 'connected', broker: brokerName(broker.url) });
      this.#failures = 0;
      this.#lastError = undefined;
      logger.info(
        { broker: brokerName(broker.url), sessionPresent: connack.sessionPresent },
        `connected to MQTT broker ${brokerName(broker.url)}`,
      );
      client.subscribe(subscriptionMap(this.#deps.subscriptions), (error, granted) => {
        if (error) {
          logger.error({ err: error }, `MQTT subscribe failed: ${error.message}`);
          return;
        }
        for (const g of granted ?? []) {
          if (g.qos === 128) logger.error({ topic: g.topic }, `broker refused subscription to ${g.topic} (ACL?)`);
        }
      });
      this.#deps.onConnect(connack.sessionPresent);
    });
    client.on('message', (topic, payload, packet) => this.#deps.onMessage(topic, payload, packet));
    client.on('error', (error) => {
      // The same failure on every retry is logged once, so an unreachable broker does not fill the journal.
      const text = errorText(error);
      this.#attemptFailed = true;
      this.#stateTell(failureState(error, brokerName(broker.url)));
      if (text !== this.#lastError) {
        logger.warn({ broker: brokerName(broker.url), code: (error as { code?: unknown }).code }, `MQTT: ${text}`);
        this.#lastError = text;
      }
    });
    client.on('close', () => {
      const wasConnected = this.#connected;
      this.#connected = false;
      if (!this.#attemptFailed) {
        const detail = wasConnected ? 'connection lost' : 'closed before CONNACK';
        this.#stateTell({ state: 'unreachable', broker: brokerName(broker.url), detail });
      }
      this.#attemptFailed = false;
      if (wasConnected) this.#deps.onDisconnect(this.#lastError ?? 'connection closed');
      this.#retrySchedule();
    });
    return true;
  }

  #stateTell(state: BrokerState): void {
    const key = JSON.stringify(state);
    if (key === this.#stateTold || this.#stopping) return;
    this.#stateTold = key;
    this.#deps.onState?.(state);
  }

  #retrySchedule(): void {
    if (this.#stopping || this.#retryTimer || !this.#client) return;
    const { initialMs, maxMs } = this.#deps.backoff;
    const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(this.#failures, 20));
    this.#failures++;
    // "Equal jitter": at least half the step, so retries spread out without collapsing to 0.
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      const client = this.#client;
      if (this.#stopping || !client) return;
      client.options.will = willPacket(this.#deps.beforeConnect());
      client.reconnect();
    }, delay);
  }

  /** Publishes now; false when not connected (the caller decides whether to keep it for later). */
  publish(topic: string, payload: string, options: PublishOptions = {}): boolean {
    const client = this.#client;
    if (!client || !this.#connected) return false;
    client.publish(
      topic,
      // The last net for every message (replies quote sources too): one redaction for logs, MQTT and HTTP.
      redactText(payload),
      {
        qos: options.qos ?? 1,
        retain: options.retain ?? false,
        ...(options.properties ? { properties: options.properties } : {}),
      },
      (error) => {
        if (error) this.#deps.logger.warn({ topic }, `MQTT publish to ${topic} failed: ${error.message}`);
      },
    );
    return true;
  }

  /** Publishes at QoS 1 and resolves true once the broker acknowledged it; false when not connected or refused. */
  publishAcked(topic: string, payload: string): Promise<boolean> {
    const client = this.#client;
    if (!client || !this.#connected) return Promise.resolve(false);
    return new Promise((resolve) => {
      client.publish(topic, redactText(payload), { qos: 1 }, (error) => {
        if (error) this.#deps.logger.warn({ topic }, `MQTT publish to ${topic} failed: ${error.message}`);
        resolve(!error);
      });
    });
  }

  /**
   * Leaves cleanly: publishes `farewell` (the retained offline state) if connected, then a
   * normal DISCONNECT, which tells the broker not to send the last will.
   */
  async stop(farewell?: { topic: string; payload: string }, timeoutMs = 700): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const client = this.#client;
    this.#client = undefined;
    if (!client) return;
    if (farewell && this.#connected) {
      await withTimeout(
        new Promise<void>((resolve) =>
          client.publish(farewell.topic, farewell.payload, { qos: 1, retain: true }, () => resolve()),
        ),
        timeoutMs,
      );
    }
    this.#connected = false;
    await withTimeout(new Promise<void>((resolve) => client.end(false, {}, () => resolve())), timeoutMs);
    // A broker that did not answer in time: drop the socket rather than hold the shutdown.
    client.end(true);
  }

  /** Test hook: loses the network without a DISCONNECT, as a pulled cable would. */
  socketDestroy(): void {
    this.#client?.stream.destroy();
  }
}

/** MQTT v5 subscription options per topic (see Subscription.commands). */
export function subscriptionMap(subscriptions: readonly Subscription[]): ISubscriptionMap {
  return Object.fromEntries(
    subscriptions.map(({ topic, commands }) => [
      topic,
      commands ? { qos: 1 as const, rh: 2, rap: true } : { qos: 1 as const, rh: 0, rap: false },
    ]),
  );
}

function willPacket(will: LastWill): IClientOptions['will'] {
  return { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: true };
}

function readPem(path: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : String(code);
    throw new Error(`cannot read ${key} ${path}: ${why}`);
  }
}

/**
 * A failed attempt as the installer screen says it: a CONNACK's reason code is the broker
 * refusing (credentials, a banned client id); anything else never reached a broker that answered.
 */
export function failureState(error: Error, broker: string): BrokerState {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'number') {
    return { state: 'refused', broker, detail: error.message.replace(/^Connection refused: /i, '') };
  }
  return { state: 'unreachable', broker, detail: error.message.replace(/^connect /, '') };
}

function errorText(error: Error): string {
  const code = (error as { code?: unknown }).code;
  if (code === 'ECONNREFUSED') return 'broker refused the connection (not running?)';
  if (code === 135 || code === 134) return `broker rejected the credentials (${error.message})`;
  return error.message;
}

async function withTimeout(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
