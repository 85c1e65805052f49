import type { Screens } from '../display/screens.ts';
import { isLoopbackBind } from '../http/access.ts';
import { Metrics } from '../http/metrics.ts';
import { StatusEndpoint } from '../http/server.ts';
import { HealthTracker } from '../status/health.ts';
import { StatusTracker } from '../status/status.ts';
import type { BusEvents } from '../supervisor/bus.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';
import { appVersion } from '../version.ts';

export interface HttpDeps {
  /** Epoch ms the supervisor started; uptime counts from here. */
  readonly startedAt: number;
  /** Most unread bytes per /logs follower before lines are dropped (tests make it small). */
  readonly followBufferBytes?: number;
}

type Preview = BusEvents['preview.updated'];

/**
 * The local status endpoint for technicians and Prometheus (docs/http.md). Loopback only unless
 * `http.bind` opens it to the LAN, which needs `http.token`; without one it refuses to listen and
 * says why, and the screens play on regardless. Everything it serves comes from bus events, so it
 * shows what the MQTT `status` shows.
 */
export function httpCreate(context: ExtensionContext, overrides: Partial<HttpDeps> = {}): Extension {
  const { config, logger, bus, addon, logRing } = context;
  const startedAt = overrides.startedAt ?? Math.round(performance.timeOrigin);
  const previews = new Map<string, Preview>();
  const offs: Array<() => void> = [];
  let endpoint: StatusEndpoint | undefined;
  let status: StatusTracker | undefined;
  let health: HealthTracker | undefined;
  let metrics: Metrics | undefined;
  let screens: Screens | undefined = bus.latest('display.ready')?.screens;

  const outputNames = (): string[] =>
    [...new Set([...(screens?.outputs().map((o) => o.name) ?? []), ...previews.keys()])].sort();

  return {
    name: 'http',
    async start() {
      const { bind, port, token } = config.http;
      if (!isLoopbackBind(bind) && token === '') {
        logger.error(
          { code: 'ERR_HTTP_TOKEN_REQUIRED', bind },
          `status endpoint not started: http.bind ${bind} opens it to the network, which needs http.token (or bind 127.0.0.1)`,
        );
        return;
      }
      const latest = bus.latest('preview.updated');
      if (latest) previews.set(latest.output, latest);
      offs.push(
        bus.on('preview.updated', (p) => previews.set(p.output, p)),
        bus.on('display.ready', (ready) => {
          screens = ready.screens;
        }),
      );
      status = new StatusTracker({
        bus,
        config,
        versions: { app: appVersion, addon: addon.version(), node: process.version },
        startedAt,
      });
      const tracker = HealthTracker.acquire({ bus, config, frameLoops: () => addon.frameLoops() });
      health = tracker;
      const documentNow = status;
      metrics = new Metrics({
        bus,
        health: tracker,
        mqttConfigured: config.mqtt.url !== '',
        startedAt,
        outputStats: () => screens?.stats(),
      });
      endpoint = new StatusEndpoint({
        bind,
        port,
        token,
        rate: config.http.rateLimit,
        logger,
        ...(overrides.followBufferBytes ? { followBufferBytes: overrides.followBufferBytes } : {}),
        sources: {
          // The endpoint redacts every answer (sources may be URLs with credentials in them).
          status: () => documentNow.document(),
          health: () => {
            // Polled now: a probe right after a stall must not get the last second's answer.
            tracker.frameLoopsNow();
            const h = tracker.assess();
            const healthy = h.state === 'ok' || h.state === 'degraded';
            return {
              healthy,
              body: {
                healthy,
                state: h.state,
                reasons: h.reasons,
                broker: h.broker,
                outputs: h.outputs.map((o) => ({ name: o.name, playing: o.playing })),
                frameLoops: h.frameLoops,
              },
            };
          },
          outputs: () => {
            const doc = documentNow.document();
            const byName = new Map(doc.outputs.map((o) => [o.name, o]));
            // Virtual outputs have no KMS mode in the status document; their size is known here.
            const sizes = new Map(screens?.outputs().map((o) => [o.name, `${o.width}x${o.height}@${o.refresh}`]));
            return tracker.assess().outputs.map((o) => {
              const p = previews.get(o.name);
              const row = byName.get(o.name);
              return {
                name: o.name,
                mode: row?.mode ?? sizes.get(o.name) ?? null,
                source: o.source,
                decoder: row?.decoder ?? null,
                playing: o.playing,
                frames: o.frames,
                dropped: o.dropped,
                problem: o.problem ?? null,
                preview: p ? { at: p.at, width: p.width, height: p.height } : null,
                monitor: row?.monitor ?? null,
                power: row?.power ?? null,
                cec: row?.cec ?? null,
                rotation: row?.rotation ?? null,
                layout: row?.layout ?? null,
              };
            });
          },
          outputNames,
          preview: (output) => previews.get(output),
          previewMissing: (output) =>
            config.preview.intervalS === 0
              ? `previews are off (preview.intervalS is 0)`
              : `no preview of ${output} yet; one is taken every ${config.preview.intervalS} s`,
          metrics,
          logRing,
        },
      });
      try {
        const address = await endpoint.start();
        const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
        const url = `http://${host}:${address.port}/`;
        logger.info({ url, lan: !isLoopbackBind(bind) }, `status endpoint on ${url}`);
        bus.emit('http.listening', { url });
      } catch (error) {
        // A taken port must not take the screens down with it.
        logger.error(
          { code: 'ERR_HTTP_LISTEN', bind, port, err: error },
          `status endpoint not started: cannot listen on ${bind}:${port}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
        );
        endpoint = undefined;
      }
    },
    async stop() {
      for (const off of offs.splice(0)) off();
      await endpoint?.stop();
      endpoint = undefined;
      status?.close();
      health?.release();
      metrics?.close();
      previews.clear();
    },
  };
}
