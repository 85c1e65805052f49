import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { type Broker, type BrokerOptions, FleetClient, mosquittoStart, type Received } from '../helpers/mosquitto.ts';
import { until } from '../helpers/supervisor.ts';
import { scratchDir, writeJson } from '../helpers/tmp.ts';

const BIN = new URL('../../bin/multihead', import.meta.url).pathname;

export interface HostileBoxOptions {
  readonly id?: string;
  readonly groups?: string[];
  /** Config file contents (device.id, mqtt.url and dataDir are filled in). */
  readonly file?: Record<string, unknown>;
  /** More environment for the supervisor (MULTIHEAD_*). */
  readonly env?: Record<string, string>;
  readonly broker?: BrokerOptions;
  /** Reuse a broker (e.g. to restart the box against the same retained messages). */
  readonly reuseBroker?: Broker;
  /** Reuse a data directory across starts. */
  readonly dataDir?: string;
  /** Fleet client options (credentials when the broker has an ACL). */
  readonly fleetAuth?: { username: string; password: string };
}

/**
 * The real supervisor process (bin/multihead: every extension, virtual outputs and the demo on
 * this machine) against Debian's mosquitto, with a fleet client that records everything under
 * `multihead/#`. Its log lines (pino JSON on stdout) are kept in `lines`. Killed when the test ends.
 */
export class HostileBox {
  readonly broker: Broker;
  readonly fleet: FleetClient;
  readonly id: string;
  readonly dataDir: string;
  readonly configPath: string;
  readonly lines: string[] = [];
  readonly #t: ExecutionContext;
  readonly #env: Record<string, string>;
  child: ChildProcess | undefined;
  exits = 0;
  session = 0;

  private constructor(t: ExecutionContext, broker: Broker, fleet: FleetClient, options: HostileBoxOptions) {
    this.#t = t;
    this.broker = broker;
    this.fleet = fleet;
    this.id = options.id ?? 'kiosk-h';
    this.dataDir = options.dataDir ?? scratchDir(t);
    this.configPath = writeJson(scratchDir(t), 'config.json', {
      playback: { demo: true },
      ...options.file,
      device: { id: this.id, groups: options.groups ?? ['lobby'], ...(options.file?.device as object) },
      mqtt: { url: broker.url, ...(options.file?.mqtt as object) },
      http: { port: 0, ...(options.file?.http as object) },
      dataDir: this.dataDir,
    });
    this.#env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MULTIHEAD_'))),
      MULTIHEAD_CONFIG: this.configPath,
      MULTIHEAD_DISPLAY_DEVICE: '/dev/dri/card99',
      ...(options.env as Record<string, string>),
    } as Record<string, string>;
  }

  static async start(t: ExecutionContext, options: HostileBoxOptions = {}): Promise<HostileBox> {
    const broker = options.reuseBroker ?? (await mosquittoStart(t, options.broker));
    const fleet = await FleetClient.connect(t, broker.url, options.fleetAuth ?? {});
    await fleet.subscribe('multihead/#');
    const box = new HostileBox(t, broker, fleet, options);
    await box.boot();
    return box;
  }

  /**
   * Starts the supervisor process and waits for its birth (`state` online with a new session);
   * `birth: false` only starts it (a start that is not expected to reach this broker).
   */
  async boot(options: { birth?: boolean } = {}): Promise<void> {
    const child = spawn(BIN, [], { env: this.#env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.#t.teardown(() => {
      child.kill('SIGKILL');
    });
    let pending = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      pending += chunk;
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      this.lines.push(...parts);
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => this.lines.push(...chunk.split('\n').filter(Boolean)));
    child.once('exit', () => {
      this.exits += 1;
    });
    if (options.birth === false) return;
    const before = this.session;
    const birth = await this.fleet.next(
      (m) =>
        m.topic === `multihead/${this.id}/state` &&
        (m.json as { state?: string; session?: number })?.state === 'online' &&
        ((m.json as { session: number }).session ?? 0) > before,
      30_000,
      `birth of ${this.id} after session ${before}`,
    );
    this.session = (birth.json as { session: number }).session;
  }

  /** The exit code once the process ends by itself (an orderly restart asks systemd to start it again). */
  exited(timeoutMs = 30_000): Promise<number | null> {
    const child = this.child;
    if (!child) return Promise.reject(new Error('the box was never started'));
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the box did not exit within ${timeoutMs} ms`)), timeoutMs);
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
  }

  /** SIGTERM, and the exit code. */
  async stop(): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    return exited;
  }

  /**
   * A v5 request on `topic` (default: this device's `cmd/<command>`) with a fresh reply address
   * `multihead/replies/fleet/<uuid>`; the device answers on that address plus `/<its id>`.
   * Resolves with the reply, or rejects after `timeoutMs`.
   */
  async request(
    command: string,
    body: Record<string, unknown> = {},
    options: { topic?: string; properties?: Record<string, unknown>; retain?: boolean; timeoutMs?: number } = {},
  ): Promise<Received> {
    const replyTopic = `multihead/replies/fleet/${randomUUID()}`;
    await this.fleet.subscribe(replyTopic);
    await this.fleet.publish(options.topic ?? `multihead/${this.id}/cmd/${command}`, JSON.stringify(body), {
      retain: options.retain ?? false,
      properties: { responseTopic: replyTopic, ...options.properties },
    });
    return this.fleet.next(
      (m) => m.topic === `${replyTopic}/${this.id}`,
      options.timeoutMs ?? 10_000,
      `reply to ${command}`,
    );
  }

  /** The first log line (raw JSON text) matching, waiting for it. */
  logLine(match: RegExp, what: string, timeoutMs = 15_000): Promise<string> {
    return until(() => this.lines.find((l) => match.test(l)), what, timeoutMs);
  }

  /** The status endpoint's base URL (no trailing slash), from the line the box logs when it listens. */
  async httpUrl(timeoutMs = 15_000): Promise<string> {
    const line = await this.logLine(/status endpoint on http:\/\//, 'the status endpoint listening', timeoutMs);
    const url = /status endpoint on (http:\/\/[^\s"]+)/.exec(line)?.[1];
    if (!url) throw new Error(`no URL in ${line}`);
    return url.replace(/\/$/, '');
  }

  path(name: string): string {
    return join(this.dataDir, name);
  }
}
