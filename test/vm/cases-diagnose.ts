// `multihead diagnose` on a real kernel (vkms). The command runs in the guest as a technician
// would run it, next to the kms-server holding the card as DRM master (diagnose must not need
// master), and what it prints is checked against the kernel: plane ids against debugfs's
// atomic state, formats and modifiers against the engine's own read of the same card.
import assert from 'node:assert/strict';
import type { PlaneInfo } from '../../native/index.d.ts';
import type { CaseContext, VmCase } from './cases.ts';

interface DiagPlane {
  id: number;
  kind: string;
  possibleCrtcs: number[];
  formats: string[];
  modifiers: { format: string; modifier: string; name: string }[];
}

interface DiagCard {
  path: string;
  driver?: string;
  error?: string;
  planes: DiagPlane[];
  crtcs: { id: number; index: number }[];
  paths: { crtcIndex: number; decode: string; outcome: string; plane?: number; text: string }[];
}

interface DiagReport {
  driPresent: boolean;
  cards: DiagCard[];
  renderNodes: { path: string; error?: string }[];
}

async function diagnose(ctx: CaseContext, json: boolean): Promise<{ code: number; stdout: string }> {
  const r = await ctx.vm.exec(['bin/multihead', 'diagnose', ...(json ? ['--json'] : [])], { timeoutMs: 60000 });
  return { code: r.code ?? -1, stdout: r.stdout };
}

const sorted = (list: string[]): string[] => [...list].sort();

export const diagnoseCases: VmCase[] = [
  {
    id: 'diagnose-planes',
    title: 'multihead diagnose lists vkms planes, formats and modifiers as the kernel reports them',
    async run(ctx) {
      const opened = await ctx.kms.call<{ path: string; driver: string }>('open', { path: 'auto' });
      assert.equal(opened.driver, 'vkms');
      const engine = await ctx.kms.call<PlaneInfo[]>('planes');

      const { code, stdout } = await diagnose(ctx, true);
      assert.equal(code, 0, `diagnose exit ${code}: ${stdout.slice(0, 400)}`);
      const report = JSON.parse(stdout) as DiagReport;
      const card = report.cards.find((c) => c.driver === 'vkms');
      assert.ok(card, `no vkms card in ${report.cards.map((c) => `${c.path} ${c.driver ?? c.error}`).join(', ')}`);
      assert.equal(card.error, undefined);

      // Plane ids: the kernel's own atomic state (debugfs) names every plane.
      const minor = /card(\d+)$/.exec(card.path)?.[1];
      const state = await ctx.vm.exec(['cat', `/sys/kernel/debug/dri/${minor}/state`]);
      const kernelIds = [...state.stdout.matchAll(/^plane\[(\d+)\]/gm)].map((m) => Number(m[1])).sort((a, b) => a - b);
      assert.ok(kernelIds.length > 0, `no planes in debugfs state: ${state.stdout.slice(0, 200)}`);
      assert.deepEqual(
        card.planes.map((p) => p.id).sort((a, b) => a - b),
        kernelIds,
      );

      // Formats (GETPLANE) and IN_FORMATS pairs, as the engine read them through its own path.
      for (const p of card.planes) {
        const e = engine.find((x) => x.id === p.id);
        assert.ok(e, `plane ${p.id} unknown to the engine`);
        assert.equal(p.kind, e.kind, `plane ${p.id} kind`);
        assert.deepEqual(sorted(p.formats), sorted(e.formats), `plane ${p.id} formats`);
        assert.deepEqual(
          sorted(p.modifiers.map((m) => `${m.format}/${m.modifier}`)),
          sorted(e.modifiers.map((m) => `${m.format}/${m.modifier}`)),
          `plane ${p.id} modifiers`,
        );
        for (const m of p.modifiers)
          assert.ok(p.formats.includes(m.format), `plane ${p.id}: ${m.format} in IN_FORMATS only`);
      }

      // The software path per CRTC follows from the planes: NV12 linear somewhere → one upload per frame.
      for (const crtc of card.crtcs) {
        const judged: DiagCard['paths'][number] | undefined = card.paths.find(
          (x) => x.crtcIndex === crtc.index && x.decode === 'software decode',
        );
        if (!judged) continue; // CRTCs without a connected display are not judged
        const nv12 = card.planes.some(
          (p) =>
            p.possibleCrtcs.includes(crtc.index) &&
            (p.modifiers.length === 0
              ? p.formats.includes('NV12')
              : p.modifiers.some((m) => m.format === 'NV12' && m.modifier === '0x0')),
        );
        assert.equal(judged.outcome, nv12 ? 'cpu-upload' : 'cpu-convert', judged.text);
      }
      assert.ok(card.paths.length > 0, 'no decode paths judged');

      // The text form names every plane with its formats.
      const text = await diagnose(ctx, false);
      assert.equal(text.code, 0);
      for (const p of card.planes) {
        assert.match(text.stdout, new RegExp(`plane ${p.id} ${p.kind} \\(crtcs [0-9,]+\\): ${p.formats[0]}`));
      }
      const overlays = card.planes.filter((p) => p.kind === 'overlay').length;
      return `${card.planes.length} planes (${overlays} overlays) match debugfs and the engine; paths: ${card.paths
        .map((p) => `crtc ${p.crtcIndex} ${p.decode} ${p.outcome}`)
        .join('; ')}; render nodes ${report.renderNodes.length}`;
    },
  },
];
