import { readdirSync } from 'node:fs';
import { PlaybackExtension } from '../playback/extension.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';

export { DEMO_SOURCE, demoSource } from '../playback/demo.ts';

/** Playback (src/playback/extension.ts) with its dependencies taken from the context. */
export function playbackCreate(context: ExtensionContext): Extension {
  const { config, logger, bus, addon, commands } = context;
  return new PlaybackExtension({
    config,
    logger,
    bus,
    commands,
    decode: new addon.DecodeManager({
      sharedDecode: config.decode.shared,
      maxDecoders: config.decode.maxDecoders,
    }),
    renderNodeOf: (cardPath) => renderNodeOf(cardPath),
  });
}

/** /dev/dri/renderD* of the same GPU as a card node, from sysfs; undefined if there is none. */
export function renderNodeOf(cardPath: string, sysfs = '/sys/class/drm'): string | undefined {
  const card = cardPath.split('/').pop() ?? '';
  try {
    const entries = readdirSync(`${sysfs}/${card}/device/drm`);
    const render = entries.filter((e) => e.startsWith('renderD')).sort()[0];
    return render ? `/dev/dri/${render}` : undefined;
  } catch {
    return undefined;
  }
}
