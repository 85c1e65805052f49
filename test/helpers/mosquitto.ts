import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { connectAsync, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { scratchDir } from './tmp.ts';

export interface BrokerOptions {
  /** Require this user name and password (a mosquitto password file is generated). */
  readonly auth?: { username: string; password: string };
  /** More users in the password file (with `auth`, or alone). */
  readonly users?: ReadonlyArray<{ username: string; password: string }>;
  /** mosquitto ACL file contents (`acl_file`). */
  readonly acl?: string;
  /** Keep sessions and queued messages across broker restarts (a persistence file in the scratch dir). */
  readonly persistence?: boolean;
  /** Listen with TLS using certificates made by `tlsFiles`. */
  readonly tls?: TlsFiles;
  /** Allocate the port and write the config, but leave the broker stopped (for "broker down at start"). */
  readonly stopped?: boolean;
}

export interface Broker {
  readonly port: number;
  readonly url: string;
  /** Starts (again) on the same port. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** A free TCP port on loopback (the kernel picks; a short race with other processes is accepted). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/**
 * Debian's mosquitto on a free loopback port with a generated config, stopped when the test
 * ends. Real broker, real sockets: retained messages, last wills and v5 properties behave as
 * they do in the field.
 */
export async function mosquittoStart(t: ExecutionContext, options: BrokerOptions = {}): Promise<Broker> {
  const dir = scratchDir(t);
  const port = await freePort();
  const lines = [
    `listener ${port} 127.0.0.1`,
    // Run as root in CI; without this mosquitto drops to user "mosquitto" and cannot read the scratch dir.
    'user root',
    ...(options.persistence
      ? ['persistence true', `persistence_location ${dir}/`, 'autosave_interval 1']
      : ['persistence false']),
    `log_dest file ${join(dir, 'mosquitto.log')}`,
    'log_type error',
    'log_type warning',
    'log_type notice',
  ];
  const users = [...(options.auth ? [options.auth] : []), ...(options.users ?? [])];
  if (users.length > 0) {
    const passwords = join(dir, 'passwords');
    writeFileSync(passwords, '');
    for (const u of users) execFileSync('mosquitto_passwd', ['-b', passwords, u.username, u.password]);
    lines.push('allow_anonymous false', `password_file ${passwords}`);
  } else {
    lines.push('allow_anonymous true');
  }
  if (options.acl !== undefined) {
    const acl = join(dir, 'acl');
    writeFileSync(acl, options.acl);
    lines.push(`acl_file ${acl}`);
  }
  if (options.tls) {
    lines.push(`cafile ${options.tls.ca}`, `certfile ${options.tls.serverCert}`, `keyfile ${options.tls.serverKey}`);
  }
  const configPath = join(dir, 'mosquitto.conf');
  writeFileSync(configPath, `${lines.join('\n')}\n`);

  let child: ChildProcess | undefined;
  const stop = async (): Promise<void> => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      running.once('exit', () => resolve());
      running.kill('SIGTERM');
    });
  };
  const start = async (): Promise<void> => {
    if (child) return;
    const started = spawn('mosquitto', ['-c', configPath], { stdio: 'ignore' });
    child = started;
    const deadline = Date.now() + 5000;
    while (!(await portOpen(port))) {
      if (started.exitCode !== null)
        throw new Error(`mosquitto exited with ${started.exitCode}; see ${dir}/mosquitto.log`);
      if (Date.now() > deadline) throw new Error(`mosquitto did not listen on ${port} within 5 s`);
      await sleep(25);
    }
  };
  t.teardown(stop);
  if (!options.stopped) await start();
  return { port, url: `${options.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`, start, stop };
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export interface TlsFiles {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

/** A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
export function tlsFiles(t: ExecutionContext): TlsFiles {
  const dir = scratchDir(t);
  const p = (name: string): string => join(dir, name);
  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { stdio: 'ignore' });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=multihead test CA',
  );
  for (const [name, cn, ext] of [
    ['server', '127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    ['client', 'multihead-device', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    openssl('req', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`);
    writeFileSync(p(`${name}.ext`), `${ext}\n`);
    openssl(
      'x509',
      '-req',
      '-in',
      p(`${name}.csr`),
      '-CA',
      p('ca.pem'),
      '-CAkey',
      p('ca.key'),
      '-CAcreateserial',
      '-out',
      p(`${name}.pem`),
      '-days',
      '2',
      '-extfile',
      p(`${name}.ext`),
    );
  }
  return {
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
  };
}

export interface Received {
  readonly topic: string;
  readonly text: string;
  readonly json: unknown;
  readonly retain: boolean;
  readonly packet: IPublishPacket;
}

/**
 * A fleet-side client (what a dashboard or fleet manager would run) that records everything
 * it receives and can wait for a message matching a predicate.
 */
export class FleetClient {
  readonly client: MqttClient;
  readonly received: Received[] = [];
  readonly #waiters = new Set<{ match: (m: Received) => boolean; resolve: (m: Received) => void }>();

  private constructor(client: MqttClient) {
    this.client = client;
    client.on('message', (topic, payload, packet) => {
      const text = payload.toString('utf8');
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      const message = { topic, text, json, retain: packet.retain, packet };
      this.received.push(message);
      for (const waiter of this.#waiters) {
        if (waiter.match(message)) {
          this.#waiters.delete(waiter);
          waiter.resolve(message);
        }
      }
    });
  }

  static async connect(t: ExecutionContext, url: string, options: IClientOptions = {}): Promise<FleetClient> {
    const client = await connectAsync(url, {
      protocolVersion: 5,
      reconnectPeriod: 0,
      // The wait is for the CONNACK, and ends with it: long, because at ava's start two cores
      // spawn a broker and a supervisor per test file at once (5 s ran out there).
      connectTimeout: 30_000,
      ...options,
    });
    t.teardown(() => client.endAsync(true));
    return new FleetClient(client);
  }

  async subscribe(...topics: string[]): Promise<void> {
    await this.client.subscribeAsync(topics, { qos: 1 });
  }

  /** The first message (already received or still to come) that matches. */
  next(match: (m: Received) => boolean, timeoutMs = 5000, what = 'a matching message'): Promise<Received> {
    const already = this.received.find(match);
    if (already) return Promise.resolve(already);
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      waiter.resolve = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      this.#waiters.add(waiter);
    });
  }

  on(topic: string): Received[] {
    return this.received.filter((m) => m.topic === topic);
  }

  async publish(
    topic: string,
    payload: string | Buffer,
    options: Parameters<MqttClient['publishAsync']>[2] = {},
  ): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1, ...options });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
