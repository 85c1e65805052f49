import type { Config } from '../config/schema.ts';
import { CecOutputs } from '../display/cec.ts';
import { fdStoreName, listenFds } from '../display/fd-store.ts';
import { MonitorWatch, monitorName } from '../display/monitors.ts';
import { kmsErrorCode, outputsPlan, rotationsOf, virtualOutputs } from '../display/outputs.ts';
import { displayPowerCommand } from '../display/power.ts';
import { kmsScreens, type Screens, virtualScreens } from '../display/screens.ts';
import { VideoEvents } from '../display/video-events.ts';
import type {
  ConnectorInfo,
  DisplayEvent,
  DrmDeviceInfo,
  KmsDevice,
  MonitorInfo,
  OutputInfo,
  VirtualDisplay,
} from '../native/addon.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';

/** Hotplug uevents come in bursts (one per connector and a change per card): settle first. */
const HOTPLUG_SETTLE_MS = 250;
/** Dark grey, not black: a technician can tell "driven, nothing to play yet" from "no signal". */
const SLATE_BGRX = [0x20, 0x1c, 0x18, 0xff] as const;

/**
 * Drives the KMS device: picks the card, opens it through the native engine, configures the
 * outputs from the `outputs` setting and keeps them configured across hotplug. Without a
 * card it says why in one line and drives virtual outputs instead (memory scanout, simulated
 * vblank). Either way it announces the outputs as `Screens` for playback.
 */
export function displayCreate(context: ExtensionContext): Extension {
  const { config, logger, bus, addon } = context;
  let device: KmsDevice | undefined;
  let virtual: VirtualDisplay | undefined;
  let outputs: OutputInfo[] = [];
  const slates = new Map<string, number>();
  const monitors = new MonitorWatch();
  let hotplugTimer: NodeJS.Timeout | undefined;
  const videoEvents = new VideoEvents({ bus, logger });
  /** The card's descriptor is in systemd's store (see fd-store.ts). */
  let stored = false;

  /**
   * Opens the card, or takes it over from the previous instance when systemd kept its
   * descriptor. A descriptor that cannot be taken over (the previous instance stopped cleanly
   * and dropped master) leaves the store and the card is opened afresh.
   */
  const kmsOpen = (path: string): KmsDevice => {
    const name = fdStoreName(path);
    const inherited = listenFds(process.env, process.pid).get(name);
    // Taken once: a later open in this process must not reuse a number that is closed by
    // then, or that by then is another file.
    delete process.env.LISTEN_FDS;
    delete process.env.LISTEN_PID;
    delete process.env.LISTEN_FDNAMES;
    if (inherited === undefined) return addon.KmsDevice.open(path);
    try {
      return addon.KmsDevice.open(path, inherited);
    } catch (error) {
      logger.warn({ device: path, code: kmsErrorCode(error) }, `${(error as Error).message}; opening ${path} afresh`);
      try {
        addon.sdNotify(`FDSTOREREMOVE=1\nFDNAME=${name}`);
      } catch {
        // No store to clean: nothing kept the file.
      }
      return addon.KmsDevice.open(path);
    }
  };

  const slateFor = (d: KmsDevice, width: number, height: number): number => {
    const key = `${width}x${height}`;
    const existing = slates.get(key);
    if (existing !== undefined) return existing;
    const buffer = d.createDumbBuffer(width, height, 'XR24');
    const pixels = new Uint8Array(width * height * 4);
    for (let i = 0; i < pixels.length; i += 4) pixels.set(SLATE_BGRX, i);
    d.writeBuffer(buffer, pixels);
    slates.set(key, buffer);
    return buffer;
  };

  /** Configures what the setting asks for; one refused output does not take the others down. */
  const outputsApply = (d: KmsDevice): void => {
    const connectors = d.connectors();
    const plan = outputsPlan(config.outputs, connectors);
    for (const s of plan.skipped)
      logger.warn({ connector: s.connector }, `output ${s.connector} not driven: ${s.reason}`);
    let configured: OutputInfo[];
    try {
      configured = d.configure(plan.outputs);
    } catch (error) {
      logger.error({ code: kmsErrorCode(error), err: error }, `outputs refused together: ${(error as Error).message}`);
      // Add them one at a time, keeping each that the kernel accepts.
      const accepted: typeof plan.outputs = [];
      configured = [];
      for (const output of plan.outputs) {
        try {
          configured = d.configure([...accepted, output]);
          accepted.push(output);
        } catch (e) {
          logger.error(
            { connector: output.connector, code: kmsErrorCode(e) },
            `output ${output.connector} refused: ${(e as Error).message}`,
          );
        }
      }
      if (accepted.length === 0) configured = d.configure([]);
    }
    const before = new Set(outputs.map((o) => o.connector));
    for (const o of configured) {
      if (!before.has(o.connector)) {
        logger.info(
          { connector: o.connector, mode: o.mode.name, crtc: o.crtc, planes: o.planes.length },
          `output ${o.connector}: ${o.mode.name} on CRTC ${o.crtc}`,
        );
      }
    }
    for (const connector of before) {
      if (!configured.some((o) => o.connector === connector)) logger.warn({ connector }, `output ${connector} removed`);
    }
    outputs = configured;
    videoEvents.forget(configured.map((o) => o.connector));
    const fresh = configured.filter((o) => !before.has(o.connector));
    if (fresh.length > 0) {
      d.present(
        fresh.map((o) => ({ connector: o.connector, layers: [{ buffer: slateFor(d, o.mode.width, o.mode.height) }] })),
      );
    }
    bus.emit('display.outputs', { outputs: configured, monitors: monitorsTrack(configured, connectors) });
  };

  /** Each driven connector's monitor; a different one on a connector that had one is said once. */
  const monitorsTrack = (
    configured: readonly OutputInfo[],
    connectors: readonly ConnectorInfo[],
  ): Record<string, MonitorInfo | null> => {
    const { monitors: now, changed } = monitors.take(configured, connectors);
    for (const c of changed) {
      logger.warn(
        { connector: c.output, before: c.before, after: c.after },
        `output ${c.output}: monitor changed from ${monitorName(c.before)} to ${c.after ? monitorName(c.after) : 'one without EDID'}`,
      );
      bus.emit('display.monitor.changed', c);
    }
    return now;
  };

  const onEvent = (event: DisplayEvent): void => {
    if (videoEvents.take(event)) return;
    if (event.kind !== 'hotplug' || !device) return;
    clearTimeout(hotplugTimer);
    hotplugTimer = setTimeout(() => {
      if (!device) return;
      logger.info('connectors changed; reconfiguring outputs');
      try {
        outputsApply(device);
      } catch (error) {
        logger.error({ code: kmsErrorCode(error) }, `reconfiguring after hotplug failed: ${(error as Error).message}`);
      }
    }, HOTPLUG_SETTLE_MS);
    hotplugTimer.unref();
  };

  const virtualStart = (reason: string): void => {
    const wanted = virtualOutputs(config.outputs);
    virtual = new addon.VirtualDisplay(wanted);
    logger.info(
      { outputs: wanted.map((o) => o.name) },
      `virtual outputs ${wanted.map((o) => `${o.name} ${o.width}x${o.height}@${o.refresh}`).join(', ')}`,
    );
    const screens = virtualScreens(
      virtual,
      wanted.map((o) => ({ name: o.name, width: o.width, height: o.height, refresh: o.refresh ?? 60 })),
      rotationsOf(config.outputs),
    );
    screensNow = screens;
    bus.emit('display.ready', { mode: 'virtual', reason, screens, display: virtual });
  };

  let screensNow: Screens | undefined;
  let withdraw: (() => void) | undefined;

  return {
    name: 'display',
    start() {
      withdraw = context.commands.register({
        name: 'display.power',
        description:
          'Display power (DPMS): {"on": false} puts the outputs\' monitors to sleep (their last frame kept), {"on": true} wakes them. Args: {"on", "outputs"?}.',
        handler: async (args) => {
          const result = await displayPowerCommand(screensNow, args);
          logger.info(
            { outputs: result.outputs, ...(result.cec ? { cec: result.cec } : {}) },
            `display power: ${Object.entries(result.outputs)
              .map(([o, p]) => `${o} ${p}${cecSaid(result.cec?.[o])}`)
              .join(', ')}`,
          );
          bus.emit('display.power', result);
          return result;
        },
      });
      const devices = addon.listDrmDevices();
      for (const d of devices) {
        if (d.error) logger.warn({ device: d.path }, `${d.error}`);
        else logger.debug({ device: d }, `${d.path}: ${d.driver}, ${d.hasKms ? 'KMS' : 'no KMS'}`);
      }
      const chosen = displayPick(devices, config.display.device);
      if (!('device' in chosen)) {
        logger.warn(
          { reason: chosen.reason, devices: devices.length },
          'no KMS device found; running with virtual outputs',
        );
        virtualStart(chosen.reason);
        return;
      }
      const path = chosen.device.path;
      try {
        device = kmsOpen(path);
      } catch (error) {
        const reason = (error as Error).message;
        logger.error(
          { device: chosen.device.path, code: kmsErrorCode(error) },
          `cannot drive ${chosen.device.path}: ${reason}`,
        );
        virtualStart(reason);
        return;
      }
      logger.info({ device: device.path, driver: device.driver }, `using KMS device ${device.path} (${device.driver})`);
      try {
        stored = device.fdStore(fdStoreName(path));
      } catch (error) {
        // Only the restart loses: the screens go dark while the next instance starts.
        logger.warn({ device: path }, `${path} not kept over restarts: ${(error as Error).message}`);
      }
      device.onEvent(onEvent);
      outputsApply(device);
      const takeover = device.takeover;
      if (takeover) {
        logger.info(
          { device: path, takeover },
          `took ${path} over from the previous instance: its last frame stayed on ${takeover.kept} of ${outputs.length} output(s) until this one's first; the ${takeover.framebuffers} framebuffer(s) and ${takeover.handlesClosed} buffer handle(s) it left are freed as they leave the screen`,
        );
      }
      const cec = new CecOutputs({ logger, onChange: () => bus.emit('display.cec', {}) });
      const card = Number(/(\d+)$/.exec(path)?.[1] ?? -1);
      const connectorIds = new Map(device.connectors().map((c) => [c.name, c.id]));
      // In the background: the first frame does not wait for the TV.
      void cec.setup(
        outputs.map((o) => ({
          output: o.connector,
          setting: cecSettingOf(config.outputs, o.connector),
          card,
          connectorId: connectorIds.get(o.connector) ?? -1,
        })),
      );
      screensNow = kmsScreens(device, () => outputs, rotationsOf(config.outputs), cec);
      bus.emit('display.ready', { mode: 'kms', device: chosen.device, screens: screensNow });
    },
    stop() {
      withdraw?.();
      withdraw = undefined;
      screensNow = undefined;
      clearTimeout(hotplugTimer);
      const path = device?.path;
      device?.close();
      device = undefined;
      if (stored && path !== undefined) {
        stored = false;
        try {
          addon.sdNotify(`FDSTOREREMOVE=1\nFDNAME=${fdStoreName(path)}`);
        } catch (error) {
          logger.warn({ device: path }, `could not take ${path} out of systemd's store: ${(error as Error).message}`);
        }
      }
      virtual?.close();
      virtual = undefined;
      outputs = [];
      slates.clear();
    },
  };
}

/** `outputs[].cec` for a connector: "auto" unless the list says otherwise. */
function cecSettingOf(setting: Config['outputs'], connector: string): string {
  return setting === 'auto' ? 'auto' : (setting.find((o) => o.connector === connector)?.cec ?? 'auto');
}

/** A log line's account of one output's CEC outcome. */
function cecSaid(outcome: { tv: string; error?: string } | undefined): string {
  if (!outcome) return '';
  return outcome.error ? ` (CEC: ${outcome.error})` : ` (TV ${outcome.tv})`;
}

/** The configured card, or with `auto` the first KMS card with something plugged in, else the first KMS card. */
export function displayPick(
  devices: readonly DrmDeviceInfo[],
  wanted: string,
): { device: DrmDeviceInfo } | { reason: string } {
  const kms = devices.filter((d) => d.hasKms && !d.error);
  if (wanted !== 'auto') {
    const device = devices.find((d) => d.path === wanted);
    if (!device) return { reason: `${wanted} does not exist` };
    if (device.error) return { reason: device.error };
    return device.hasKms ? { device } : { reason: `${wanted} (${device.driver}) has no KMS` };
  }
  const device = kms.find((d) => d.connectedConnectors > 0) ?? kms[0];
  if (device) return { device };
  return { reason: devices.length === 0 ? 'no /dev/dri/card* nodes' : `${devices.length} DRM node(s), none with KMS` };
}
