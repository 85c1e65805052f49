import type { NativeAddon } from '../native/addon.ts';
import { table } from './table.ts';

/**
 * `multihead diagnose`: the box's DRM devices, connectors, CRTCs, planes (formats and
 * modifiers), the VAAPI profiles of each render node, and the decode→plane path the engine
 * will take per CRTC. Read-only: safe next to a running supervisor (docs/diagnose.md).
 */

/**
 * sysexits' EX_OSFILE: no card node that could be inspected as a DRM device (no /dev/dri, no
 * card in it, or none that answers as DRM): no GPU driver loaded, or none passed in.
 */
export const DIAGNOSE_NO_DEVICE = 72;

type Report = ReturnType<NativeAddon['diagnose']>;
type Card = Report['cards'][number];
type Write = (text: string) => void;

/** Runs the diagnosis of `dir` (default /dev/dri), prints it, and returns the exit code. */
export function diagnoseRun(addon: NativeAddon, json: boolean, write: Write, dir?: string): number {
  const report = addon.diagnose(dir);
  const code = report.cards.some((c) => !c.error) ? 0 : DIAGNOSE_NO_DEVICE;
  if (json) {
    write(`${JSON.stringify(report, null, 2)}\n`);
    return code;
  }
  if (!report.driPresent) {
    write(
      `No DRM devices: ${report.driDir} does not exist (no GPU driver loaded, or not passed into this container).\n` +
        'The supervisor will drive virtual outputs only.\n',
    );
    return code;
  }
  if (report.cards.length === 0) {
    write(
      `No DRM card nodes in ${report.driDir}: no display controller. The supervisor will drive virtual outputs only.\n`,
    );
  }
  for (const card of report.cards) write(cardText(card));
  for (const node of report.renderNodes) write(renderNodeText(node));
  if (report.renderNodes.length === 0) write(`No render nodes in ${report.driDir}: no VAAPI decoding.\n`);
  return code;
}

function cardText(card: Card): string {
  const head = `== ${card.path}${card.driver ? ` (${card.driver})` : ''}\n`;
  if (card.error) return `${head}  cannot inspect: ${card.error}\n\n`;
  const connectors = table(
    ['connector', 'id', 'status', 'crtcs'],
    card.connectors.map((c) => [
      c.name,
      String(c.id),
      c.writeback ? 'writeback' : c.connected ? 'connected' : 'disconnected',
      c.possibleCrtcs.join(','),
    ]),
  );
  const crtcs = table(
    ['crtc', 'id'],
    card.crtcs.map((c) => [String(c.index), String(c.id)]),
  );
  const planes = card.planes
    .map((p) => {
      const formats = p.formats
        .map((f) => {
          const mods = p.modifiers.filter((m) => m.format === f).map((m) => m.name);
          return mods.length === 0 ? f : `${f} [${mods.join(', ')}]`;
        })
        .join(' ');
      return `  plane ${p.id} ${p.kind} (crtcs ${p.possibleCrtcs.join(',')}): ${formats}\n`;
    })
    .join('');
  const paths = card.paths.map((p) => `  crtc ${p.crtcIndex}: ${p.text}\n`).join('');
  const render = card.renderNode ? `VAAPI from ${card.renderNode}` : 'no render node of this GPU: software decoding';
  return `${head}${indent(connectors)}${indent(crtcs)}planes (format [modifiers]):\n${planes}decode → plane paths (${render}):\n${paths}\n`;
}

function renderNodeText(node: Report['renderNodes'][number]): string {
  const head = `== ${node.path}${node.driver ? ` (${node.driver})` : ''}\n`;
  if (node.error) return `${head}  VAAPI: ${node.error}\n\n`;
  const rows = node.profiles.map((p) => [p.profile, p.entrypoints.join(', ')]);
  return `${head}  VAAPI driver: ${node.vaapiVendor ?? '?'}\n${indent(table(['profile', 'entrypoints'], rows))}\n`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => `  ${l}\n`)
    .join('');
}
