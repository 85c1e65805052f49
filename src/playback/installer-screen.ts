import { hostname, networkInterfaces } from 'node:os';
import type { Config } from '../config/schema.ts';
import type { ScreenOutput, Screens } from '../display/screens.ts';
import type { Logger } from '../log/logger.ts';
import { scrubText } from '../log/redact.ts';
import { brokerName } from '../mqtt/broker-name.ts';
import type { DecodeManager } from '../native/addon.ts';
import type { BrokerState, BusEvents, EventBus } from '../supervisor/bus.ts';
import { releaseQuietly } from './first-picture.ts';

/** Where an installer screen's source starts: health counts it as "nothing to play". */
export const INSTALLER_SOURCE_PREFIX = 'pattern:info?';
/** IP addresses are looked at this often (DHCP, a cable plugged in); a still is redrawn only on a change. */
const ADDRESSES_EVERY_MS = 10_000;
/** Dark blue-grey: not the slate's grey (driven, content failed), not black (no signal). */
const COLOUR = '1c2a3a';
/** Longer lines would run under the QR code (the addon cuts them there anyway). */
const LINE_MAX = 64;
/** The addon's limit for an info screen's text (MAX_INFO_TEXT): many outputs lose their last lines, not the screen. */
const TEXT_MAX = 1200;

/** What the installer on the ladder reads. */
export interface InstallerFacts {
  readonly name: string;
  readonly id: string;
  readonly version: string;
  /** LAN addresses, IPv4 first. */
  readonly addresses: readonly string[];
  readonly broker: BrokerState | { readonly state: 'off' };
  readonly outputs: ReadonlyArray<Pick<ScreenOutput, 'name' | 'width' | 'height' | 'refresh'>>;
  /** The status page's port (the one it listens on once it does). */
  readonly httpPort: number;
  /** The status page listens on loopback only: the URL shown does not answer from a phone. */
  readonly httpLocalOnly: boolean;
}

/** The addresses a phone on the LAN can reach: not loopback, not link-local; IPv4 first. */
export function lanAddresses(interfaces: ReturnType<typeof networkInterfaces> = networkInterfaces()): string[] {
  const all = Object.values(interfaces).flatMap((list) => list ?? []);
  const usable = all.filter(
    (a) => !a.internal && !a.address.startsWith('169.254.') && !/^fe[89ab][0-9a-f]:/i.test(a.address),
  );
  const v4 = usable.filter((a) => a.family === 'IPv4').map((a) => a.address);
  const v6 = usable.filter((a) => a.family === 'IPv6').map((a) => a.address);
  return [...v4, ...v6];
}

/** The status page at the first LAN address; undefined without one or without a port yet. */
export function statusPageUrl(addresses: readonly string[], port: number): string | undefined {
  const first = addresses[0];
  if (first === undefined || port === 0) return undefined;
  return `http://${first.includes(':') ? `[${first}]` : first}:${port}/`;
}

/** The broker's state (and why, when it is not connected), then which broker: two short lines. */
export function brokerLines(broker: InstallerFacts['broker']): string[] {
  switch (broker.state) {
    case 'off':
      return ['broker: off (no mqtt.url)'];
    case 'connecting':
    case 'connected':
      return [`broker: ${broker.state}`, `  ${broker.broker}`];
    case 'refused':
    case 'unreachable':
      return [`broker: ${broker.state} (${broker.detail})`, `  ${broker.broker}`];
  }
}

/**
 * The installer screen's lines, the device's name first (drawn large). Printable ASCII only (the
 * built-in font), each line cut to what fits beside the QR code, scrubbed like logs are and with
 * the configured `secrets` masked: no password or token reaches a screen anyone can photograph.
 */
export function installerText(f: InstallerFacts, secrets: readonly string[] = []): string {
  const url = statusPageUrl(f.addresses, f.httpPort);
  const lines = [
    f.name,
    `id: ${f.id}`,
    `firmware: multihead ${f.version}`,
    `ip: ${f.addresses.length > 0 ? f.addresses.join(' ') : 'none (no network address)'}`,
    ...brokerLines(f.broker),
    ...f.outputs.map((o) => `${o.name}: ${o.width}x${o.height}@${Math.round(o.refresh)}`),
    '',
    url ? `status page: ${url}` : 'status page: no address yet',
    ...(url && f.httpLocalOnly ? ['  (loopback only: see http.bind)'] : []),
    '',
    'no content assigned',
  ];
  const masked = (line: string): string => secrets.reduce((l, secret) => l.replaceAll(secret, '[redacted]'), line);
  return lines
    .map((l) =>
      scrubText(masked(l))
        .replace(/[^\x20-\x7e]/g, '?')
        .slice(0, LINE_MAX),
    )
    .join('\n')
    .slice(0, TEXT_MAX);
}

/** The still for one output size: the text, and a QR code of the status page when there is one. */
export function installerSource(width: number, height: number, text: string, url: string | undefined): string {
  // Lines of 1/45 of the height: a dozen lines and the QR code fit on any 16:9 screen.
  const font = Math.max(8, Math.round(height / 45));
  const qr = url ? `&qr=${encodeURIComponent(url)}` : '';
  return `${INSTALLER_SOURCE_PREFIX}size=${width}x${height}&colour=${COLOUR}&fontsize=${font}&text=${encodeURIComponent(text)}${qr}`;
}

export interface InstallerScreenDeps {
  readonly decode: DecodeManager;
  readonly logger: Logger;
  readonly bus: Pick<EventBus, 'on' | 'emit' | 'latest'>;
  readonly config: Pick<Config, 'device' | 'http' | 'mqtt' | 'decode'>;
  readonly version: string;
}

/**
 * With no content and no demo, every output nobody has claimed shows what an installer needs
 * (device, addresses, broker, firmware, modes, a QR code of the status page) as a still: one
 * decoded frame held, redrawn only when its text changes. Same interface as the demo.
 */
export class InstallerScreen {
  readonly #deps: InstallerScreenDeps;
  readonly #claimed = new Set<string>();
  /** Outputs showing it: their consumer and the source it shows. */
  readonly #on = new Map<string, { consumer: string; source: string }>();
  readonly #withdraw: Array<() => void> = [];
  #screens: Screens | undefined;
  #timer: NodeJS.Timeout | undefined;
  #serial = 0;

  constructor(deps: InstallerScreenDeps) {
    this.#deps = deps;
  }

  start(): void {
    const { bus } = this.#deps;
    const refresh = (): void => this.fill(this.#screens);
    this.#withdraw.push(bus.on('mqtt.broker', refresh), bus.on('http.listening', refresh));
    this.#timer = setInterval(refresh, ADDRESSES_EVERY_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    for (const w of this.#withdraw.splice(0)) w();
    this.#screens = undefined;
  }

  claim(outputs: readonly string[]): void {
    for (const output of outputs) {
      this.#claimed.add(output);
      const on = this.#on.get(output);
      if (!on) continue;
      this.#on.delete(output);
      releaseQuietly(this.#deps.decode, on.consumer);
    }
  }

  unclaim(outputs: readonly string[]): void {
    for (const o of outputs) this.#claimed.delete(o);
  }

  /** Shows the screen, as it reads now, on every unclaimed output whose still says something else. */
  fill(screens: Screens | undefined): void {
    this.#screens = screens;
    if (!screens) return;
    const outputs = screens.outputs();
    this.#forgetGone(outputs);
    const { mqtt, http } = this.#deps.config;
    const secrets = [mqtt.password, http.token].filter((s) => s !== '');
    const facts = this.#facts(outputs);
    const text = installerText(facts, secrets);
    const url = statusPageUrl(facts.addresses, facts.httpPort);
    const shown: string[] = [];
    for (const o of outputs) {
      if (this.#claimed.has(o.name)) continue;
      const source = installerSource(o.width, o.height, text, url);
      if (this.#on.get(o.name)?.source === source) continue;
      if (this.#show(screens, o.name, source)) shown.push(o.name);
    }
    if (shown.length === 0) return;
    this.#deps.logger.info({ outputs: shown, url }, `installer screen on ${shown.join(', ')}`);
    this.#deps.bus.emit('installer.screen', { outputs: shown, text, url: url ?? null });
  }

  /** Unplugged outputs' stills are let go (a replugged one is drawn afresh, maybe at another mode). */
  #forgetGone(outputs: readonly ScreenOutput[]): void {
    for (const [name, on] of this.#on) {
      if (outputs.some((o) => o.name === name)) continue;
      this.#on.delete(name);
      releaseQuietly(this.#deps.decode, on.consumer);
    }
  }

  #show(screens: Screens, output: string, source: string): boolean {
    const { decode, logger, bus, config } = this.#deps;
    const consumer = `installer#${++this.#serial}:${output}`;
    const before = this.#on.get(output);
    try {
      // Prerolled: the output switches at a vblank from the old still to the new one.
      decode.acquire(consumer, { source, hw: config.decode.hardware, preroll: true });
      screens.play(decode, consumer, [{ output }]);
    } catch (error) {
      releaseQuietly(decode, consumer);
      logger.error(
        { output, err: error },
        `output ${output}: cannot show the installer screen: ${(error as Error).message}`,
      );
      return false;
    }
    if (before) releaseQuietly(decode, before.consumer);
    else bus.emit('playback.changed', { output, source: null, reason: 'installer screen' });
    this.#on.set(output, { consumer, source });
    return true;
  }

  #facts(outputs: readonly ScreenOutput[]): InstallerFacts {
    const { config, version } = this.#deps;
    return {
      name: config.device.name || hostname(),
      id: config.device.id,
      version,
      addresses: lanAddresses(),
      broker: config.mqtt.url === '' ? { state: 'off' } : (this.#deps.bus.latest('mqtt.broker') ?? connecting(config)),
      outputs,
      httpPort: this.#httpPort(),
      httpLocalOnly: /^(127\.|::1$|localhost$)/.test(this.#deps.config.http.bind),
    };
  }

  /** The port the status page listens on (config says 0: the kernel's pick), once it does. */
  #httpPort(): number {
    const url = this.#deps.bus.latest('http.listening')?.url;
    return url ? Number(new URL(url).port) : this.#deps.config.http.port;
  }
}

/** Before the MQTT extension has said anything. */
function connecting(config: Pick<Config, 'mqtt'>): BusEvents['mqtt.broker'] {
  return { state: 'connecting', broker: brokerName(config.mqtt.url) };
}
