// Host side of test/vm/guest/kms-server.ts: starts it in the guest and calls its methods.
import { type GuestProcess, guestNode, type Vm } from './qemu.ts';

export class KmsCallError extends Error {
  readonly code: string;
  constructor(method: string, code: string, message: string) {
    super(`${method}: ${message}`);
    this.code = code;
  }
}

export interface KmsClient {
  call<T = unknown>(method: string, params?: object, timeoutMs?: number): Promise<T>;
  /** The guest's stderr so far, for failure reports. */
  stderr(): string;
  stop(): Promise<void>;
}

interface Pending {
  method: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Where each thread of the guest's node processes waits, as the kernel says (state, wait
 * channel, the top of its kernel stack): a server that stopped answering is blocked
 * somewhere, and this names where.
 */
async function guestThreads(vm: Vm): Promise<string> {
  const script = [
    'for d in /proc/[0-9]*; do',
    '  [ "$(basename $d)" = "$$" ] && continue;',
    '  grep -q "kms-server\\|agent" $d/cmdline 2>/dev/null || continue;',
    '  echo "pid $(basename $d): $(tr "\\0" " " < $d/cmdline | cut -c1-100)";',
    '  for t in $d/task/*; do',
    '    echo "  $(basename $t) $(cat $t/comm) $(cut -d" " -f3 $t/stat) wchan=$(cat $t/wchan) $(head -4 $t/stack 2>/dev/null | tr "\\n" " ")";',
    '  done;',
    'done',
  ].join(' ');
  const timeout = new Promise<string>((resolve) =>
    setTimeout(() => resolve('(the agent did not answer in 20 s)'), 20000),
  );
  const listed = vm
    .exec(['sh', '-c', script])
    .then((r) => `${r.stdout}${r.stderr}`.trim())
    .catch((e: Error) => `(cannot list: ${e.message})`);
  return await Promise.race([listed, timeout]);
}

export async function kmsClientStart(vm: Vm, repo: string, nodeArgs: string[] = []): Promise<KmsClient> {
  const node = guestNode;
  // Test hooks on: the native-panic case provokes panics through the API.
  const proc: GuestProcess = vm.spawn([node, ...nodeArgs, `${repo}/test/vm/guest/kms-server.ts`], {
    cwd: repo,
    env: { MULTIHEAD_TEST_HOOKS: '1' },
  });
  let nextId = 1;
  const pending = new Map<number, Pending>();
  let stderr = '';
  let ready: (() => void) | undefined;
  const readyPromise = new Promise<void>((resolve) => {
    ready = resolve;
  });
  proc.onStderr((line) => {
    stderr += `${line}\n`;
  });
  proc.onStdout((line) => {
    let message: { id?: number; ready?: boolean; result?: unknown; error?: { code: string; message: string } };
    try {
      message = JSON.parse(line);
    } catch {
      stderr += `(stdout) ${line}\n`;
      return;
    }
    if (message.ready) {
      ready?.();
      return;
    }
    const p = message.id === undefined ? undefined : pending.get(message.id);
    if (!p || message.id === undefined) return;
    pending.delete(message.id);
    clearTimeout(p.timer);
    if (message.error) p.reject(new KmsCallError(p.method, message.error.code, message.error.message));
    else p.resolve(message.result);
  });
  const exited = proc.exited.then((r) => {
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`kms-server exited (code ${r.code}, signal ${r.signal}) during ${p.method}: ${stderr}`));
    }
    pending.clear();
    return r;
  });
  await Promise.race([
    readyPromise,
    exited.then((r) => {
      throw new Error(`kms-server exited before it was ready (code ${r.code}): ${stderr}`);
    }),
    new Promise((_, reject) => setTimeout(() => reject(new Error(`kms-server not ready in 60 s: ${stderr}`)), 60000)),
  ]);
  return {
    call<T>(method: string, params: object = {}, timeoutMs = 60000): Promise<T> {
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          void guestThreads(vm).then((threads) =>
            reject(new Error(`${method}: no reply in ${timeoutMs} ms; the guest's node threads: ${threads}`)),
          );
        }, timeoutMs);
        pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, timer });
        proc.write(`${JSON.stringify({ id, method, params })}\n`);
      });
    },
    stderr: () => stderr,
    async stop() {
      proc.end();
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      // A guest that stopped answering never reports the exit: give up after 30 s, so the
      // runner goes on to its next case (which then fails on its own) instead of hanging.
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 30000).unref())]);
      clearTimeout(timer);
    },
  };
}
