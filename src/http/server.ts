import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger.ts';
import { redactValue, scrubText } from '../log/redact.ts';
import { LEVEL_ORDER, type LogRing } from '../log/ring.ts';
import { RateLimiter } from '../rate-limit.ts';
import { isLoopbackAddress, requestToken, tokenMatches } from './access.ts';
import { LogFollower } from './log-follower.ts';
import type { Metrics } from './metrics.ts';
import { statusPage } from './page.ts';

/** What the routes read; the HTTP extension builds it from the bus, so this file knows no events. */
export interface EndpointSources {
  /** The status document (same as MQTT `status`), secrets already scrubbed. */
  status(): unknown;
  /** The /healthz body and whether it is healthy (200) or not (503). */
  health(): { healthy: boolean; body: unknown };
  /** One row per output for /outputs. */
  outputs(): unknown[];
  /** Output names the status page and preview route know. */
  outputNames(): string[];
  preview(output: string): { jpeg: Buffer; at: number } | undefined;
  /** Why an output has no preview yet (previews off, nothing shown yet). */
  previewMissing(output: string): string;
  readonly metrics: Metrics;
  readonly logRing: LogRing;
}

export interface EndpointOptions {
  readonly bind: string;
  readonly port: number;
  /** Required from every non-loopback client; '' lets only loopback clients in. */
  readonly token: string;
  readonly rate: { readonly burst: number; readonly perSecond: number };
  readonly logger: Logger;
  readonly sources: EndpointSources;
  /** Most /logs?follow=1 streams at once: each holds a socket and a ring listener. */
  readonly maxFollowers?: number;
  /** Most bytes a /logs?follow=1 client may leave unread before lines are dropped (default 256 KiB). */
  readonly followBufferBytes?: number;
  readonly keepaliveMs?: number;
}

class HttpProblem extends Error {
  readonly status: number;
  readonly code: string;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    code: string,
    message: string,
    extra: Record<string, unknown> = {},
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra;
    this.headers = headers;
  }
}

const MAX_LINES = 1000;
const DEFAULT_LINES = 100;
const COMMON_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const;

/**
 * The local status endpoint (docs/http.md): /, /healthz, /status, /metrics, /logs,
 * /outputs and /outputs/<name>/preview.jpg. Read-only; every request is rate limited per client
 * address, non-loopback clients need the token, and every failure is a JSON error with a code.
 */
export class StatusEndpoint {
  readonly #options: EndpointOptions;
  readonly #limiter: RateLimiter;
  readonly #followers = new Set<ServerResponse>();
  #server: Server | undefined;

  constructor(options: EndpointOptions) {
    this.#options = options;
    this.#limiter = new RateLimiter(options.rate);
  }

  /** Listens; resolves with the address actually bound (port 0 picks one). */
  async start(): Promise<AddressInfo> {
    const server = createServer((request, response) => this.#handle(request, response));
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    server.maxHeadersCount = 64;
    // A malformed request line or header never reaches #handle: answer it here, never throw.
    server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return socket.destroy();
      const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      const body = JSON.stringify({ error: { code: 'ERR_BAD_REQUEST', message: `malformed request: ${error.code}` } });
      socket.end(
        `HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body) + 1}\r\nconnection: close\r\n\r\n${body}\n`,
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#options.port, this.#options.bind, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (error) => this.#options.logger.error({ err: error }, `status endpoint: ${error.message}`));
    this.#server = server;
    return server.address() as AddressInfo;
  }

  async stop(): Promise<void> {
    for (const follower of this.#followers) follower.end();
    this.#followers.clear();
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    try {
      this.#route(request, response);
    } catch (error) {
      if (error instanceof HttpProblem) {
        this.#error(response, error);
        return;
      }
      // A bug in a route: the caller gets a coded error, the log gets the details, the process lives.
      this.#options.logger.error({ err: error, path: pathOnly(request.url) }, `status endpoint: ${String(error)}`);
      this.#error(response, new HttpProblem(500, 'ERR_INTERNAL', 'internal error; see the supervisor log'));
    }
  }

  #route(request: IncomingMessage, response: ServerResponse): void {
    const client = request.socket.remoteAddress ?? 'unknown';
    const wait = this.#limiter.wait(client);
    if (wait > 0) {
      throw new HttpProblem(
        429,
        'ERR_RATE_LIMITED',
        `too many requests from ${client}; retry in ${wait} s`,
        {},
        {
          'retry-after': String(wait),
        },
      );
    }
    const raw = request.url ?? '';
    if (!raw.startsWith('/')) throw new HttpProblem(400, 'ERR_BAD_REQUEST', 'the request target must be a path');
    let url: URL;
    try {
      url = new URL(`http://localhost${raw}`);
    } catch {
      throw new HttpProblem(400, 'ERR_BAD_REQUEST', 'the request target is not a valid URL path');
    }
    if (!isLoopbackAddress(client) && !tokenMatches(requestToken(request, url), this.#options.token)) {
      throw new HttpProblem(
        401,
        'ERR_UNAUTHORIZED',
        'a token is required from outside this machine: send "Authorization: Bearer <http.token>"',
        {},
        { 'www-authenticate': 'Bearer realm="multihead"' },
      );
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      throw new HttpProblem(
        405,
        'ERR_METHOD_NOT_ALLOWED',
        `${request.method} is not allowed; the status endpoint is read-only (GET, HEAD)`,
        {},
        { allow: 'GET, HEAD' },
      );
    }
    const { sources } = this.#options;
    const path = url.pathname;
    switch (path) {
      case '/': {
        const nonce = randomBytes(16).toString('base64');
        response.writeHead(200, {
          ...COMMON_HEADERS,
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
        });
        response.end(statusPage(nonce));
        return;
      }
      case '/healthz': {
        const { healthy, body } = sources.health();
        this.#json(response, healthy ? 200 : 503, body);
        return;
      }
      case '/status':
        this.#json(response, 200, sources.status());
        return;
      case '/outputs':
        this.#json(response, 200, { outputs: sources.outputs() });
        return;
      case '/metrics':
        void sources.metrics.text().then(
          (text) => {
            response.writeHead(200, { ...COMMON_HEADERS, 'content-type': sources.metrics.contentType });
            response.end(scrubText(text));
          },
          (error: unknown) => {
            this.#options.logger.error({ err: error }, `metrics collection failed: ${(error as Error).message}`);
            this.#error(response, new HttpProblem(500, 'ERR_INTERNAL', 'metrics collection failed'));
          },
        );
        return;
      case '/logs':
        this.#logs(request, response, url);
        return;
    }
    const preview = /^\/outputs\/([^/]+)\/preview\.jpg$/.exec(path);
    if (preview) {
      this.#preview(response, preview[1] as string);
      return;
    }
    throw new HttpProblem(404, 'ERR_NOT_FOUND', `no route ${JSON.stringify(truncate(path))}`, {
      routes: ['/', '/healthz', '/status', '/metrics', '/logs', '/outputs', '/outputs/<name>/preview.jpg'],
    });
  }

  #preview(response: ServerResponse, encoded: string): void {
    let name: string;
    try {
      name = decodeURIComponent(encoded);
    } catch {
      throw new HttpProblem(400, 'ERR_BAD_REQUEST', 'the output name is not valid percent-encoding');
    }
    const { sources } = this.#options;
    const known = sources.outputNames();
    if (!known.includes(name)) {
      throw new HttpProblem(
        404,
        'ERR_UNKNOWN_OUTPUT',
        `no output ${JSON.stringify(truncate(name))}; known: ${known.join(', ') || 'none'}`,
        { known },
      );
    }
    const latest = sources.preview(name);
    if (!latest) throw new HttpProblem(404, 'ERR_NO_PREVIEW', sources.previewMissing(name), { known });
    response.writeHead(200, {
      ...COMMON_HEADERS,
      'content-type': 'image/jpeg',
      'content-length': String(latest.jpeg.length),
      'last-modified': new Date(latest.at).toUTCString(),
    });
    response.end(latest.jpeg);
  }

  #logs(request: IncomingMessage, response: ServerResponse, url: URL): void {
    const params = url.searchParams;
    const levelText = params.get('level') ?? undefined;
    if (levelText !== undefined && !(levelText in LEVEL_ORDER)) {
      throw new HttpProblem(
        400,
        'ERR_BAD_PARAMETER',
        `level must be one of ${Object.keys(LEVEL_ORDER).join(', ')}, got ${JSON.stringify(truncate(levelText))}`,
      );
    }
    const linesText = params.get('lines');
    let lines = DEFAULT_LINES;
    if (linesText !== null) {
      lines = /^\d{1,5}$/.test(linesText) ? Number(linesText) : Number.NaN;
      if (!(lines >= 1 && lines <= MAX_LINES)) {
        throw new HttpProblem(
          400,
          'ERR_BAD_PARAMETER',
          `lines must be an integer from 1 to ${MAX_LINES}, got ${JSON.stringify(truncate(linesText))}`,
        );
      }
    }
    const followText = params.get('follow');
    if (followText !== null && !['0', '1', 'true', 'false'].includes(followText)) {
      throw new HttpProblem(
        400,
        'ERR_BAD_PARAMETER',
        `follow must be 1 or 0, got ${JSON.stringify(truncate(followText))}`,
      );
    }
    const { logRing } = this.#options.sources;
    const tail = logRing.tail({ limit: lines, ...(levelText ? { level: levelText } : {}) });
    if (followText !== '1' && followText !== 'true') {
      this.#json(response, 200, { lines: tail });
      return;
    }
    if (this.#followers.size >= (this.#options.maxFollowers ?? 8)) {
      throw new HttpProblem(
        503,
        'ERR_BUSY',
        `already ${this.#followers.size} log followers; try again later`,
        {},
        {
          'retry-after': '10',
        },
      );
    }
    // Server-sent events: the tail first, then each line as the ring receives it.
    response.writeHead(200, {
      ...COMMON_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      connection: 'keep-alive',
    });
    if (request.method === 'HEAD') {
      response.end();
      return;
    }
    const follower = new LogFollower(response, {
      minLevel: LEVEL_ORDER[levelText ?? 'trace'] ?? 0,
      maxBufferedBytes: this.#options.followBufferBytes ?? 256 * 1024,
      keepaliveMs: this.#options.keepaliveMs ?? 15_000,
    });
    for (const entry of tail) follower.send(entry);
    const unsubscribe = logRing.subscribe((entry) => follower.send(entry));
    this.#followers.add(response);
    response.on('close', () => {
      unsubscribe();
      follower.close();
      this.#followers.delete(response);
    });
    request.socket.setTimeout(0);
  }

  #json(response: ServerResponse, status: number, body: unknown): void {
    // Every JSON answer passes the same redaction as log lines and MQTT messages.
    const text = `${JSON.stringify(redactValue(body))}\n`;
    response.writeHead(status, {
      ...COMMON_HEADERS,
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(text)),
    });
    response.end(text);
  }

  #error(response: ServerResponse, problem: HttpProblem): void {
    if (response.headersSent) {
      response.destroy();
      return;
    }
    for (const [name, value] of Object.entries(problem.headers)) response.setHeader(name, value);
    this.#json(response, problem.status, { error: { code: problem.code, message: problem.message, ...problem.extra } });
  }
}

/** Paths are echoed in errors: bounded, so a huge URL does not come back whole. */
function truncate(text: string, max = 100): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** The path without its query, for logs: a query may carry the token. */
function pathOnly(url: string | undefined): string {
  return (url ?? '').split('?')[0] ?? '';
}
