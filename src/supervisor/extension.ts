import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { LogRing } from '../log/ring.ts';
import type { NativeAddon } from '../native/addon.ts';
import type { EventBus } from './bus.ts';
import type { CommandRegistry } from './commands.ts';

/** What every extension is given: explicit dependencies, no globals. */
export interface ExtensionContext {
  readonly config: Config;
  /** Already a child logger bound to the extension's name. */
  readonly logger: Logger;
  readonly bus: EventBus;
  /** Commands this extension offers (register in start, withdraw in stop) or invokes. */
  readonly commands: CommandRegistry;
  readonly addon: NativeAddon;
  readonly logRing: LogRing;
}

/**
 * A unit of the supervisor (display, MQTT, HTTP status, LED, ...). Started in order,
 * stopped in reverse; `stop` must release everything `start` took.
 */
export interface Extension {
  readonly name: string;
  start(): Promise<void> | void;
  stop(): Promise<void> | void;
}

/**
 * Makes the extension. May be async: extensions that the first frame does not need load their
 * modules (mqtt.js, ajv, prom-client, ...) only when their turn comes, after the outputs play.
 */
export type ExtensionFactory = (context: ExtensionContext) => Extension | Promise<Extension>;

export interface ExtensionDefinition {
  readonly name: string;
  readonly create: ExtensionFactory;
  /**
   * Without it the supervisor has no reason to run (the outputs, playback, systemd's READY=1):
   * if it fails to start, everything stops and the service manager starts the process again.
   * Any other extension that fails to start is reported and left out; the rest keep running.
   */
  readonly essential?: boolean;
  /**
   * Started once every output shows its first frame (or a source failed, or a bounded wait
   * passed): what the screens do not need waits for them. The first such extension waits;
   * the ones after it follow in order.
   */
  readonly afterFirstFrame?: boolean;
}
