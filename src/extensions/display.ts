import type { DrmDeviceInfo } from '../native/addon.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';

/**
 * Finds the KMS device to drive. Outputs and planes come with the KMS engine; until then
 * this decides between a real card and virtual outputs, and says why in one line.
 */
export function displayCreate(context: ExtensionContext): Extension {
  const { config, logger, bus, addon } = context;
  return {
    name: 'display',
    start() {
      const devices = addon.listDrmDevices();
      for (const device of devices) {
        if (device.error) logger.warn({ device: device.path }, `${device.error}`);
        else logger.debug({ device }, `${device.path}: ${device.driver}, ${device.hasKms ? 'KMS' : 'no KMS'}`);
      }
      const chosen = displayPick(devices, config.display.device);
      if ('device' in chosen) {
        logger.info(
          { device: chosen.device.path, driver: chosen.device.driver, atomic: chosen.device.atomic },
          `using KMS device ${chosen.device.path} (${chosen.device.driver})`,
        );
        bus.emit('display.ready', { mode: 'kms', device: chosen.device });
      } else {
        logger.warn(
          { reason: chosen.reason, devices: devices.length },
          'no KMS device found; running with virtual outputs',
        );
        bus.emit('display.ready', { mode: 'virtual', reason: chosen.reason });
      }
    },
    stop() {},
  };
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
