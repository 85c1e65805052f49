import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import type { ExecutionContext } from 'ava';

/**
 * A loopback TCP listener that hangs up on everyone and counts who called: a source such as
 * `tcp:127.0.0.1:<port>` that must not be opened shows in `dialled()` when it was. Closed at teardown.
 */
export async function dialCounter(t: ExecutionContext): Promise<{ port: number; dialled: () => number }> {
  const listener = createServer((socket) => socket.destroy());
  let dialled = 0;
  listener.on('connection', () => dialled++);
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(() => listener.close());
  const { port } = listener.address() as AddressInfo;
  return { port, dialled: () => dialled };
}
