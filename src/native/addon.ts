import { createRequire } from 'node:module';
import type * as Native from '../../native/index.d.ts';

export type NativeAddon = typeof Native;
export type DrmDeviceInfo = Native.DrmDeviceInfo;
export type ConnectorInfo = Native.ConnectorInfo;
export type MonitorInfo = Native.MonitorInfo;
export type OutputConfig = Native.OutputConfig;
export type OutputInfo = Native.OutputInfo;
export type DisplayEvent = Native.DisplayEvent;
export type KmsDevice = Native.KmsDevice;
export type DecodeManager = Native.DecodeManager;
export type DecodeRequest = Native.DecodeRequest;
/**
 * The decoder as status shows it. `failureCode` (the ERR_ code of `failure`) and `forcedShared`
 * come with the native side of issue 12; declared here, optional, so the supervisor reads them
 * whether or not the generated native/index.d.ts has them yet.
 */
export type DecoderInfo = Omit<Native.DecoderInfo, 'sarNum' | 'sarDen' | 'rotation'> & {
  failureCode?: string;
  forcedShared?: boolean;
  /** The stream's sample aspect ratio (0:1 unknown, square); optional for hand-made status objects. */
  sarNum?: number;
  sarDen?: number;
  /** Degrees the stream's picture is turned clockwise to stand upright (its display matrix). */
  rotation?: number;
};
export type DecodeStatus = Omit<Native.DecodeStatus, 'decoders'> & { decoders: DecoderInfo[] };
export type VirtualDisplay = Native.VirtualDisplay;
export type PlayRecord = Native.PlayRecord;
export type VirtualOutputConfig = Native.VirtualOutputConfig;

const addonPath = new URL('../../native/multihead.node', import.meta.url);

/**
 * Loads the Rust addon built by `npm install`. A missing or foreign `.node` file is a
 * packaging fault, so the error says how to rebuild rather than surfacing dlopen's text.
 */
export function loadAddon(): NativeAddon {
  const require = createRequire(import.meta.url);
  try {
    return require(addonPath.pathname) as NativeAddon;
  } catch (cause) {
    throw new Error(
      `native addon ${addonPath.pathname} could not be loaded (run "npm install" to build it): ${(cause as Error).message}`,
      { cause },
    );
  }
}
