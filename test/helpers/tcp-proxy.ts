import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import type { ExecutionContext } from 'ava';

export interface TcpProxy {
  readonly port: number;
  readonly url: string;
  /**
   * The network goes away: open connections are cut without a word (no MQTT DISCONNECT, as a
   * pulled cable or a crashed process would leave them) and new ones are refused until `restore`.
   */
  cut(): void;
  restore(): void;
}

/** A loopback TCP forwarder to `targetPort`, so a test can take one client off the network. */
export async function tcpProxyStart(t: ExecutionContext, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let open = true;
  const server: Server = createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = tcpConnect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
    },
    restore() {
      open = true;
    },
  };
}
