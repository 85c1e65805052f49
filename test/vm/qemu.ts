// Boots the test VM under QEMU (TCG, no KVM or GPU needed) and drives it from the host.
//
// The guest is a Debian kernel with a busybox initramfs (test/vm/build.sh) whose /init
// (guest/init.sh) mounts this machine's root filesystem read-only over virtio-9p, plus a
// writable scratch share at the same absolute path as here, and runs guest/agent.ts with the
// repository's own Node on a virtio-serial port. The host talks to the agent in JSON lines
// (see agent.ts) and to QEMU over QMP; the serial console goes to a file kept for reports.
//
//   const vm = await vmStart({ gpu: 'virtio', heads: 3 });
//   const r = await vm.exec(['ls', '-l', '/dev/dri']);
//   const shot = await vm.screendump(0);
//   await vm.stop();
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface VmOptions {
  gpu: 'virtio' | 'vkms';
  /** virtio: max_outputs (default 3), each connected via video=Virtual-N:WxH@60e. */
  heads?: number;
  /** Mode of each virtio head; default 1024x768. */
  headSize?: { width: number; height: number };
  /** Default 1024. */
  memoryMb?: number;
  extraKernelArgs?: string[];
  /** Progress lines (build, boot). */
  log?: (line: string) => void;
  /** Boot (to the agent's ready) timeout; default 180 s. */
  bootTimeoutMs?: number;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Default: the repository root (same path in the guest). */
  cwd?: string;
  /** Added to the default environment (PATH, HOME=/tmp). */
  env?: Record<string, string>;
  /** Kill (SIGKILL) and reject after this long; default 120 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed (it is closed at once without). */
  stdin?: string;
}

export interface SpawnOptions {
  cwd?: string;
  env?: Record<string, string>;
}

/** A long-running guest command. stdin stays open until end(). */
export interface GuestProcess {
  readonly id: number;
  /** Called for each complete stdout line (without the newline), in order. */
  onStdout(callback: (line: string) => void): void;
  /** Called for each complete stderr line (without the newline), in order. */
  onStderr(callback: (line: string) => void): void;
  /** Resolves with the first line so far or to come (stdout or stderr) matching pattern. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Output so far. */
  stdout(): string;
  stderr(): string;
  write(data: string): void;
  /** Closes stdin. */
  end(): void;
  /** Signals the command's process group (default SIGTERM). */
  kill(signal?: string): void;
  /** Resolves when it exited and its output is drained; rejects if it could not start or the VM went away. */
  readonly exited: Promise<ExecResult>;
}

export interface ScreenDump {
  width: number;
  height: number;
  /** width * height * 3 bytes, RGB, rows top to bottom. */
  rgb: Buffer;
}

export interface Vm {
  /** Host directory, visible at the same path in the guest, writable by both. Removed by stop(). */
  readonly scratch: string;
  /** The artefact directory build.sh produced (vmlinuz, initrd.img, modules/, ...). */
  readonly artefacts: string;
  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(cmd: string[], opts?: SpawnOptions): GuestProcess;
  /** QMP screendump of one virtio-gpu head (0-based), parsed from PPM. virtio only. */
  screendump(head: number): Promise<ScreenDump>;
  qmp(command: string, args?: object): Promise<unknown>;
  /**
   * Turns QEMU trace events on or off (QMP trace-event-set-state), e.g. the device side of
   * virtio-gpu's SET_SCANOUT; what they print is in traceLog().
   */
  traceEvents(names: string[], enable: boolean): Promise<void>;
  /** QEMU's log file (-D): the lines of the trace events turned on, oldest first. */
  traceLog(): string;
  /** Everything the guest printed on the serial console (kernel, init, agent's stderr). */
  consoleLog(): string;
  /** Orderly poweroff, then QMP quit, then SIGKILL; removes temp files. Idempotent. */
  stop(): Promise<void>;
}

const repo = path.resolve(import.meta.dirname, '../..');
const buildScript = path.join(repo, 'test/vm/build.sh');
const agentScript = path.join(repo, 'test/vm/guest/agent.ts');
const guestPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const gpuDeviceId = 'gpu0';

/** Runs build.sh (cached: instant when nothing changed) and returns the artefact directory. */
export async function vmArtefacts(log: (line: string) => void = () => {}): Promise<string> {
  const child = spawn('bash', [buildScript], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  const stderrTail: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  lineReader(child.stderr, (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 40) stderrTail.shift();
    log(line);
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c));
  });
  const dir = stdout.trim().split('\n').pop() ?? '';
  if (code !== 0 || !dir || !fs.existsSync(path.join(dir, 'initrd.img'))) {
    throw new Error(`test/vm/build.sh failed (exit ${code}):\n${stderrTail.join('\n')}`);
  }
  return dir;
}

const tempPrefix = 'multihead-vm-';

/** Removes temp dirs of VMs whose host process died without cleaning up (SIGKILL, SIGINT). */
function removeStaleTempDirs(): void {
  let names: string[];
  try {
    names = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(tempPrefix));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = path.join(os.tmpdir(), name);
    try {
      const pid = Number(fs.readFileSync(path.join(dir, 'owner.pid'), 'utf8'));
      if (!(pid > 0)) continue;
      try {
        process.kill(pid, 0);
        continue; // still alive
      } catch {}
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {}
  }
}

/** Every live VM's cleanup, run synchronously if this process exits with VMs still up. */
const liveVms = new Set<() => void>();
let exitHookInstalled = false;
const installExitHook = (): void => {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const kill of liveVms) kill();
  });
};

/**
 * What every test VM has: TCG on q35 (no KVM here), 2 CPUs, no display, no reboot (a guest
 * that reboots has failed), the serial console in a file, QMP and the test agent's
 * virtio-serial port on unix sockets. Run through setpriv, whose parent-death signal kills
 * QEMU even if the test process dies without its exit handlers (SIGKILL, a crash).
 */
export function qemuArgsBase(o: {
  memoryMb: number | undefined;
  consolePath: string;
  qmpPath: string;
  agentPath: string;
}): string[] {
  return [
    '--pdeathsig',
    'SIGKILL',
    '--',
    'qemu-system-x86_64',
    '-nodefaults',
    '-no-user-config',
    '-machine',
    'q35',
    '-accel',
    'tcg',
    '-cpu',
    'max',
    '-smp',
    '2',
    '-m',
    String(o.memoryMb ?? 1024),
    '-display',
    'none',
    '-no-reboot',
    '-chardev',
    `file,id=console,path=${o.consolePath}`,
    '-serial',
    'chardev:console',
    '-chardev',
    `socket,id=qmp,path=${o.qmpPath},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
    '-device',
    'virtio-serial-pci,id=vser0',
    '-chardev',
    `socket,id=agent,path=${o.agentPath},server=on,wait=off`,
    '-device',
    'virtserialport,bus=vser0.0,chardev=agent,name=agent',
  ];
}

/**
 * Node for guest commands (the agent, kms-server, helper servers): a wrapper that adds
 * `guestNodeFlags`; guest/node.sh says why TCG needs them.
 */
export const guestNode = path.join(repo, 'test/vm/guest/node.sh');
export const guestNodeFlags = '--no-wasm-tier-up --no-wasm-lazy-compilation';

export async function vmStart(opts: VmOptions): Promise<Vm> {
  const log = opts.log ?? (() => {});
  const started = Date.now();
  const artefacts = await vmArtefacts(log);
  log(`artefacts ${artefacts} (${Date.now() - started} ms)`);

  const node = guestNode;
  removeStaleTempDirs();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), tempPrefix));
  fs.writeFileSync(path.join(tmp, 'owner.pid'), String(process.pid));
  const scratch = path.join(tmp, 'scratch');
  fs.mkdirSync(scratch);
  const consolePath = path.join(tmp, 'console.log');
  const qmpPath = path.join(tmp, 'qmp.sock');
  const agentPath = path.join(tmp, 'agent.sock');
  const tracePath = path.join(tmp, 'qemu-trace.log');

  const heads = opts.heads ?? 3;
  const size = opts.headSize ?? { width: 1024, height: 768 };
  const kernelArgs = [
    'console=ttyS0',
    'panic=-1',
    'oops=panic',
    // The runner asks a guest that stopped answering for its CPUs' backtraces (sysrq l, w).
    'sysrq_always_enabled',
    'printk.devkmsg=on',
    `multihead.gpu=${opts.gpu}`,
    `multihead.node=${node}`,
    `multihead.agent=${agentScript}`,
    `multihead.scratch=${scratch}`,
    `multihead.repo=${repo}`,
  ];
  if (opts.gpu === 'virtio') {
    for (let i = 1; i <= heads; i++) kernelArgs.push(`video=Virtual-${i}:${size.width}x${size.height}@60e`);
  }
  kernelArgs.push(...(opts.extraKernelArgs ?? []));

  const qemuArgs = [
    ...qemuArgsBase({ memoryMb: opts.memoryMb, consolePath, qmpPath, agentPath }),
    '-kernel',
    path.join(artefacts, 'vmlinuz'),
    '-initrd',
    path.join(artefacts, 'initrd.img'),
    '-append',
    kernelArgs.join(' '),
    // Trace events are off until a case turns them on; their lines go here, not to stderr.
    '-D',
    tracePath,
    '-fsdev',
    'local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap',
    '-device',
    'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
    '-fsdev',
    `local,id=scratch,path=${scratch},security_model=none,multidevs=remap`,
    '-device',
    'virtio-9p-pci,fsdev=scratch,mount_tag=scratch',
  ];
  if (opts.gpu === 'virtio') {
    qemuArgs.push(
      '-device',
      `virtio-gpu-pci,id=${gpuDeviceId},max_outputs=${heads},xres=${size.width},yres=${size.height}`,
    );
  }

  // setpriv's parent-death signal kills QEMU even if this process dies without running
  // its exit handlers (SIGKILL, a crash, a test runner's worker going away).
  const qemu: ChildProcess = spawn('setpriv', qemuArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let qemuOutput = '';
  const onQemuOutput = (d: Buffer): void => {
    qemuOutput = (qemuOutput + d.toString('utf8')).slice(-8000);
  };
  qemu.stdout?.on('data', onQemuOutput);
  qemu.stderr?.on('data', onQemuOutput);
  let qemuExit: { code: number | null; signal: string | null } | undefined;
  const qemuExited = new Promise<void>((resolve) => {
    qemu.on('exit', (code, signal) => {
      qemuExit = { code, signal };
      resolve();
    });
    qemu.on('error', (err) => {
      qemuOutput += `\n${err.message}`;
      qemuExit = { code: null, signal: null };
      resolve();
    });
  });
  const killNow = (): void => {
    if (!qemuExit) qemu.kill('SIGKILL');
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  liveVms.add(killNow);
  installExitHook();
  log(`qemu started (pid ${qemu.pid}), gpu=${opts.gpu}${opts.gpu === 'virtio' ? ` heads=${heads}` : ''}`);

  let savedConsole: string | undefined;
  const consoleLog = (): string => {
    if (savedConsole !== undefined) return savedConsole;
    try {
      return fs.readFileSync(consolePath, 'utf8');
    } catch {
      return '';
    }
  };
  const consoleTail = (lines = 60): string => consoleLog().trimEnd().split('\n').slice(-lines).join('\n');
  const whyDown = (): string =>
    `QEMU exited (code ${qemuExit?.code}, signal ${qemuExit?.signal})` +
    (qemuOutput.trim() ? `; qemu said: ${qemuOutput.trim()}` : '');

  let qmpClient: QmpClient | undefined;
  let agent: AgentClient | undefined;
  try {
    const bootTimeout = opts.bootTimeoutMs ?? 180000;
    const deadline = Date.now() + bootTimeout;
    const connect = async (socketPath: string): Promise<net.Socket> => {
      for (;;) {
        if (qemuExit) throw new Error(whyDown());
        if (Date.now() > deadline) throw new Error(`no ${socketPath} after ${bootTimeout} ms`);
        try {
          return await connectUnix(socketPath);
        } catch {
          await sleep(50);
        }
      }
    };
    qmpClient = new QmpClient(await connect(qmpPath));
    await qmpClient.ready;
    agent = new AgentClient(await connect(agentPath));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      agent.ready,
      qemuExited.then(() => {
        throw new Error(whyDown());
      }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the guest agent was not ready in ${bootTimeout} ms`)), bootTimeout);
      }),
    ]).finally(() => clearTimeout(timer));
    log(`guest agent ready (${Date.now() - started} ms since vmStart)`);
  } catch (e) {
    // Give the console file a moment: QEMU may still be flushing the guest's last words.
    await sleep(200);
    const tail = consoleTail();
    qmpClient?.close();
    agent?.close(new Error('boot failed'));
    killNow();
    liveVms.delete(killNow);
    throw new Error(`VM boot failed (gpu=${opts.gpu}): ${(e as Error).message}\n--- console tail ---\n${tail}`);
  }
  const qmp = qmpClient;
  const agentClient = agent;
  void qemuExited.then(() => agentClient.close(new Error(`${whyDown()}\n--- console tail ---\n${consoleTail(30)}`)));

  // bin/multihead adds MULTIHEAD_NODE_ARGS to Node's command line: the same flags as guestNode.
  const baseEnv = { PATH: guestPath, HOME: '/tmp', MULTIHEAD_NODE_ARGS: guestNodeFlags };
  const spawnGuest = (cmd: string[], o: SpawnOptions = {}): GuestProcess =>
    agentClient.spawn(cmd, o.cwd ?? repo, { ...baseEnv, ...(o.env ?? {}) });

  let stopping: Promise<void> | undefined;
  const vm: Vm = {
    scratch,
    artefacts,
    exec: async (cmd, o = {}) => {
      const proc = spawnGuest(cmd, { ...(o.cwd ? { cwd: o.cwd } : {}), ...(o.env ? { env: o.env } : {}) });
      if (o.stdin !== undefined) proc.write(o.stdin);
      proc.end();
      const timeoutMs = o.timeoutMs ?? 120000;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          proc.kill('SIGKILL');
          reject(
            new Error(
              `guest command timed out after ${timeoutMs} ms: ${cmd.join(' ')}\nstdout: ${proc.stdout()}\nstderr: ${proc.stderr()}`,
            ),
          );
        }, timeoutMs);
      });
      try {
        return await Promise.race([proc.exited, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    spawn: spawnGuest,
    screendump: async (head) => {
      if (opts.gpu !== 'virtio') throw new Error('screendump needs gpu=virtio');
      const file = path.join(tmp, `screendump-${head}-${Date.now()}.ppm`);
      await qmp.command('screendump', { filename: file, device: gpuDeviceId, head });
      try {
        return parsePpm(fs.readFileSync(file));
      } finally {
        fs.rmSync(file, { force: true });
      }
    },
    qmp: (command, args) => qmp.command(command, args),
    traceEvents: async (names, enable) => {
      for (const name of names) await qmp.command('trace-event-set-state', { name, enable });
    },
    traceLog: () => {
      try {
        return fs.readFileSync(tracePath, 'utf8');
      } catch {
        return '';
      }
    },
    consoleLog,
    stop: () => {
      stopping ??= (async () => {
        if (!qemuExit) {
          // Orderly: sync the scratch share and power off from inside (init.sh's PID 1 has
          // no handler for ACPI events), then QMP quit, then SIGKILL.
          agentClient.send({
            id: 0,
            op: 'spawn',
            cmd: ['/bin/sh', '-c', 'sync; echo o > /proc/sysrq-trigger'],
            cwd: '/',
            env: baseEnv,
          });
          await Promise.race([qemuExited, sleep(10000)]);
        }
        if (!qemuExit) {
          await Promise.race([qmp.command('quit').catch(() => {}), sleep(2000)]);
          await Promise.race([qemuExited, sleep(3000)]);
        }
        if (!qemuExit) {
          qemu.kill('SIGKILL');
          await qemuExited;
        }
        qmp.close();
        agentClient.close(new Error('the VM was stopped'));
        savedConsole = consoleLog();
        fs.rmSync(tmp, { recursive: true, force: true });
        liveVms.delete(killNow);
        log('stopped');
      })();
      return stopping;
    },
  };
  return vm;
}

// --- QMP -----------------------------------------------------------------------------------

interface QmpPending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  command: string;
}

export class QmpClient {
  readonly ready: Promise<void>;
  private readonly socket: net.Socket;
  private readonly pending = new Map<number, QmpPending>();
  private nextId = 1;
  private closedError: Error | undefined;

  constructor(socket: net.Socket) {
    this.socket = socket;
    let greeted: () => void = () => {};
    const greeting = new Promise<void>((resolve) => {
      greeted = resolve;
    });
    lineReader(socket, (line) => {
      let message: { QMP?: unknown; id?: number; return?: unknown; error?: { class: string; desc: string } };
      try {
        message = JSON.parse(line);
      } catch {
        return;
      }
      if (message.QMP) {
        greeted();
        return;
      }
      if (message.id === undefined) return; // an event
      const p = this.pending.get(message.id);
      if (!p) return;
      this.pending.delete(message.id);
      if (message.error) p.reject(new Error(`QMP ${p.command}: ${message.error.class}: ${message.error.desc}`));
      else p.resolve(message.return);
    });
    const fail = (err: Error): void => {
      this.closedError ??= err;
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('QMP connection closed')));
    this.ready = greeting.then(() => this.command('qmp_capabilities').then(() => {}));
  }

  command(command: string, args?: object): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, command });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

// --- Agent ---------------------------------------------------------------------------------

interface AgentProcessState {
  onEvent(message: AgentEvent): void;
  fail(error: Error): void;
}
interface AgentEvent {
  id?: number;
  ev: string;
  data?: string;
  code?: number | null;
  signal?: string | null;
  message?: string;
}

export class AgentClient {
  readonly ready: Promise<void>;
  private readonly socket: net.Socket;
  private readonly processes = new Map<number, AgentProcessState>();
  private nextId = 1;
  private closedError: Error | undefined;

  constructor(socket: net.Socket) {
    this.socket = socket;
    let markReady: () => void = () => {};
    this.ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    lineReader(socket, (line) => {
      let message: AgentEvent;
      try {
        message = JSON.parse(line);
      } catch {
        return;
      }
      if (message.ev === 'ready') {
        markReady();
        return;
      }
      if (message.id !== undefined) this.processes.get(message.id)?.onEvent(message);
    });
    socket.on('error', (err) => this.close(err));
    socket.on('close', () => this.close(new Error('agent connection closed')));
  }

  send(message: object): void {
    if (!this.closedError) this.socket.write(`${JSON.stringify(message)}\n`);
  }

  close(error: Error): void {
    this.closedError ??= error;
    for (const p of this.processes.values()) p.fail(this.closedError);
    this.processes.clear();
    this.socket.destroy();
  }

  spawn(cmd: string[], cwd: string, env: Record<string, string>): GuestProcess {
    const id = this.nextId++;
    const out = { stdout: '', stderr: '' };
    const partial = { stdout: '', stderr: '' };
    const callbacks: { stdout: Array<(line: string) => void>; stderr: Array<(line: string) => void> } = {
      stdout: [],
      stderr: [],
    };
    const lines: string[] = [];
    const waiters = new Set<{ pattern: RegExp; resolve: (line: string) => void }>();
    const emit = (stream: 'stdout' | 'stderr', line: string): void => {
      lines.push(line);
      for (const cb of callbacks[stream]) cb(line);
      for (const w of waiters) {
        if (w.pattern.test(line)) {
          waiters.delete(w);
          w.resolve(line);
        }
      }
    };
    const feed = (stream: 'stdout' | 'stderr', data: string): void => {
      out[stream] += data;
      const text = partial[stream] + data;
      const parts = text.split('\n');
      partial[stream] = parts.pop() ?? '';
      for (const line of parts) emit(stream, line);
    };
    const flushPartial = (): void => {
      for (const stream of ['stdout', 'stderr'] as const) {
        if (partial[stream]) emit(stream, partial[stream]);
        partial[stream] = '';
      }
    };
    let settle: { resolve: (r: ExecResult) => void; reject: (e: Error) => void } | undefined;
    const exited = new Promise<ExecResult>((resolve, reject) => {
      settle = { resolve, reject };
    });
    // Callers that never await `exited` must not turn a failure into an unhandled rejection.
    exited.catch(() => {});
    let done = false;
    /** How it ended, for "exited without printing": the exit status, the signal or the error. */
    let ended = '';
    const finish = (error: Error | undefined, result?: ExecResult): void => {
      if (done) return;
      done = true;
      ended = error ? error.message : `exit code ${result?.code}, signal ${result?.signal}`;
      this.processes.delete(id);
      flushPartial();
      for (const w of waiters) w.resolve('');
      waiters.clear();
      if (error) settle?.reject(error);
      else if (result) settle?.resolve(result);
    };
    const label = cmd.join(' ');
    this.processes.set(id, {
      onEvent: (m) => {
        if ((m.ev === 'stdout' || m.ev === 'stderr') && m.data !== undefined) feed(m.ev, m.data);
        else if (m.ev === 'exit')
          finish(undefined, { code: m.code ?? null, signal: m.signal ?? null, stdout: out.stdout, stderr: out.stderr });
        else if (m.ev === 'error') finish(new Error(`guest could not run ${label}: ${m.message}`));
      },
      fail: (e) => finish(new Error(`${label}: ${e.message}`)),
    });
    if (this.closedError) finish(new Error(`${label}: ${this.closedError.message}`));
    else this.send({ id, op: 'spawn', cmd, cwd, env });

    return {
      id,
      onStdout: (cb) => {
        callbacks.stdout.push(cb);
      },
      onStderr: (cb) => {
        callbacks.stderr.push(cb);
      },
      waitForLine: (pattern, timeoutMs = 60000) => {
        const seen = lines.find((l) => pattern.test(l));
        if (seen !== undefined) return Promise.resolve(seen);
        if (done) return Promise.reject(new Error(`${label} exited (${ended}) without printing ${pattern}`));
        return new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => {
            waiters.delete(waiter);
            reject(new Error(`${label}: no line matching ${pattern} in ${timeoutMs} ms`));
          }, timeoutMs);
          const waiter = {
            pattern,
            resolve: (line: string) => {
              clearTimeout(timer);
              if (done && !pattern.test(line))
                reject(new Error(`${label} exited (${ended}) without printing ${pattern}`));
              else resolve(line);
            },
          };
          waiters.add(waiter);
        });
      },
      stdout: () => out.stdout,
      stderr: () => out.stderr,
      write: (data) => {
        if (!done) this.send({ id, op: 'stdin', data });
      },
      end: () => {
        if (!done) this.send({ id, op: 'stdin', eof: true });
      },
      kill: (signal = 'SIGTERM') => {
        if (!done) this.send({ id, op: 'kill', signal });
      },
      exited,
    };
  }
}

// --- Helpers -------------------------------------------------------------------------------

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export const connectUnix = (socketPath: string): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', reject);
  });

/** Calls onLine for each complete line of a stream (UTF-8). */
export function lineReader(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    pending += chunk;
    let nl = pending.indexOf('\n');
    while (nl >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      onLine(line);
      nl = pending.indexOf('\n');
    }
  });
  stream.on('end', () => {
    if (pending) onLine(pending);
    pending = '';
  });
}

/** Parses a binary PPM (P6, maxval 255) as QEMU's screendump writes it. */
export function parsePpm(data: Buffer): ScreenDump {
  let pos = 0;
  const token = (): string => {
    for (;;) {
      while (pos < data.length && /\s/.test(String.fromCharCode(data[pos] ?? 0))) pos++;
      if (data[pos] === 0x23) {
        while (pos < data.length && data[pos] !== 0x0a) pos++;
        continue;
      }
      break;
    }
    const start = pos;
    while (pos < data.length && !/\s/.test(String.fromCharCode(data[pos] ?? 0))) pos++;
    return data.toString('latin1', start, pos);
  };
  const magic = token();
  const width = Number(token());
  const height = Number(token());
  const maxval = Number(token());
  pos++; // the single whitespace before the raster
  if (magic !== 'P6' || maxval !== 255 || !(width > 0) || !(height > 0)) {
    throw new Error(`unexpected screendump header: ${magic} ${width}x${height} maxval ${maxval}`);
  }
  const rgb = data.subarray(pos, pos + width * height * 3);
  if (rgb.length !== width * height * 3)
    throw new Error(`short screendump: ${rgb.length} bytes for ${width}x${height}`);
  return { width, height, rgb: Buffer.from(rgb) };
}

/** Whether this machine can run the VM suite at all (QEMU and root for build.sh). */
export function vmAvailable(): { ok: boolean; reason?: string } {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
  } catch {
    return { ok: false, reason: 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)' };
  }
  if (process.getuid?.() !== 0) return { ok: false, reason: 'build.sh needs root' };
  return { ok: true };
}
