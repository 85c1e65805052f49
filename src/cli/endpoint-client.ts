import type { Config } from '../config/schema.ts';

/** The supervisor could not be reached, or answered with an error: exit 69 (EX_UNAVAILABLE). */
export class EndpointError extends Error {
  override name = 'EndpointError';
}

/**
 * Where the local supervisor's status endpoint is: `--url`, else http.bind and http.port from
 * the configuration. A wildcard bind listens on loopback too, so the CLI asks there.
 */
export function endpointUrl(config: Config, override?: string): URL {
  if (override !== undefined) {
    let url: URL;
    try {
      url = new URL(override);
    } catch {
      throw new TypeError(`--url must be an http:// URL such as http://127.0.0.1:8780, got "${override}"`);
    }
    if (url.protocol !== 'http:') throw new TypeError(`--url must be an http:// URL, got "${override}"`);
    return url;
  }
  const { bind, port } = config.http;
  const host = bind === '0.0.0.0' ? '127.0.0.1' : bind === '::' ? '[::1]' : bind.includes(':') ? `[${bind}]` : bind;
  return new URL(`http://${host}:${port}/`);
}

export interface EndpointClient {
  readonly base: URL;
  /** GET a JSON route; 503 is an answer too (healthz says unhealthy with it). */
  json(path: string, okStatuses?: number[]): Promise<unknown>;
  /** GET a server-sent events route; calls `onEvent` with each data payload until the stream ends. */
  events(path: string, onEvent: (data: string) => void, signal?: AbortSignal): Promise<void>;
}

export function endpointClient(base: URL, token: string): EndpointClient {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const request = async (path: string, signal?: AbortSignal): Promise<Response> => {
    const url = new URL(path, base);
    try {
      return await fetch(url, { headers, ...(signal ? { signal } : {}) });
    } catch (error) {
      if ((error as Error).name === 'AbortError') throw error;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      if (cause?.code === 'ECONNREFUSED') {
        throw new EndpointError(
          `the supervisor is not running, or its status endpoint is off (nothing listens on ${base.origin})`,
        );
      }
      throw new EndpointError(
        `cannot reach ${base.origin}: ${cause?.code ?? cause?.message ?? (error as Error).message}`,
      );
    }
  };
  const failure = async (path: string, response: Response): Promise<EndpointError> => {
    let detail = '';
    try {
      const body = (await response.json()) as { error?: { code?: string; message?: string } };
      if (body.error) detail = `: ${body.error.code} ${body.error.message}`;
    } catch {
      // Not our endpoint's JSON: the status line says enough.
    }
    return new EndpointError(`${path}: HTTP ${response.status}${detail}`);
  };
  return {
    base,
    async json(path, okStatuses = [200]) {
      const response = await request(path);
      if (!okStatuses.includes(response.status)) throw await failure(path, response);
      try {
        return await response.json();
      } catch {
        throw new EndpointError(`${path}: the answer from ${base.origin} is not JSON; is that the multihead endpoint?`);
      }
    },
    async events(path, onEvent, signal) {
      const response = await request(path, signal);
      if (response.status !== 200 || !response.body) throw await failure(path, response);
      const decoder = new TextDecoder();
      let buffer = '';
      try {
        for await (const chunk of response.body) {
          buffer += decoder.decode(chunk as Uint8Array, { stream: true });
          let end = buffer.indexOf('\n\n');
          while (end >= 0) {
            const event = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = event
              .split('\n')
              .filter((l) => l.startsWith('data: '))
              .map((l) => l.slice(6))
              .join('\n');
            if (data) onEvent(data);
            end = buffer.indexOf('\n\n');
          }
        }
      } catch (error) {
        if ((error as Error).name === 'AbortError') return;
        throw new EndpointError(`${path}: the stream broke: ${(error as Error).message}`);
      }
    },
  };
}
