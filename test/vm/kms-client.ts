// Host side of test/vm/guest/kms-server.ts: starts it in the guest and calls its methods.
import type { GuestProcess, Vm } from './qemu.ts';

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

export async function kmsClientStart(vm: Vm, repo: string, nodeArgs: string[] = []): Promise<KmsClient> {
  const node = `${repo}/node_modules/.bin/node`;
  const proc: GuestProcess = vm.spawn([node, ...nodeArgs, `${repo}/test/vm/guest/kms-server.ts`], { cwd: repo });
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
          reject(new Error(`${method}: no reply in ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, timer });
        proc.write(`${JSON.stringify({ id, method, params })}\n`);
      });
    },
    stderr: () => stderr,
    async stop() {
      proc.end();
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
