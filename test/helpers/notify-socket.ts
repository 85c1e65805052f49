import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ExecutionContext } from 'ava';
import { scratchDir } from './tmp.ts';

export interface NotifyMessage {
  readonly text: string;
  /** Date.now() when the listener printed it. */
  readonly at: number;
}

export interface NotifyListener {
  readonly path: string;
  readonly messages: NotifyMessage[];
}

/**
 * A fake systemd NOTIFY_SOCKET: a unix datagram socket bound by a small python3 child (Node's
 * dgram cannot bind unix sockets) that prints each datagram as one JSON string per line.
 */
export async function notifyListen(t: ExecutionContext): Promise<NotifyListener> {
  const path = join(scratchDir(t), 'notify');
  const script = [
    'import json, socket, sys',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    's.bind(sys.argv[1])',
    'print(json.dumps("LISTENING"), flush=True)',
    'while True:',
    '    print(json.dumps(s.recv(65536).decode()), flush=True)',
  ].join('\n');
  const child = spawn('python3', ['-c', script, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill());
  const messages: NotifyMessage[] = [];
  const lines = createInterface({ input: child.stdout });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`notify listener exited with ${code}`)));
    lines.on('line', (line) => {
      const text = JSON.parse(line) as string;
      if (text === 'LISTENING') resolve();
      else messages.push({ text, at: Date.now() });
    });
  });
  return { path, messages };
}
