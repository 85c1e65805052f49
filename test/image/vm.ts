// Boots the appliance disk image under QEMU (TCG, OVMF UEFI, virtio-gpu with several heads,
// user networking with restrict=on and a guestfwd to a broker on the host's loopback) and
// drives it through QMP and the image's test agent (multihead-test-agent.service, which runs
// only with multihead.test=1 on the kernel command line). The QMP and agent protocol code is
// test/vm/qemu.ts's.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  AgentClient,
  connectUnix,
  type ExecResult,
  type GuestProcess,
  parsePpm,
  QmpClient,
  qemuArgsBase,
  type ScreenDump,
  sleep,
} from '../vm/qemu.ts';

export interface ImageVmOptions {
  /** The raw disk image to boot (written to: use a copy). */
  disk: string;
  /** OVMF variable store for this disk (a writable copy). */
  vars: string;
  /** Directory for sockets and the console log. */
  dir: string;
  heads: number;
  headSize: { width: number; height: number };
  /** Host loopback port of the broker, reached by the guest at 10.0.2.100:1883. */
  brokerPort?: number;
  /** Host loopback port of the update artefacts' HTTP server, reached by the guest at 10.0.2.101:80. */
  httpPort?: number;
  memoryMb?: number;
  /**
   * Appended to the kernel command line by systemd-stub (SMBIOS type 11
   * `io.systemd.stub.kernel-cmdline-extra`, honoured without Secure Boot): the UKI's own command
   * line is built into it and no loader entry can change it.
   */
  kernelCmdlineExtra?: string;
  /** Raw disk images attached read-only, as /dev/disk/by-id/virtio-<serial>. */
  extraDisks?: Array<{ file: string; serial: string }>;
}

export interface ImageVm {
  readonly startedAt: number;
  /** Resolves once the guest's test agent said ready (rejects if QEMU exits first). */
  agentReady(timeoutMs: number): Promise<void>;
  exec(cmd: string[], opts?: { timeoutMs?: number; stdin?: string }): Promise<ExecResult>;
  /** exec of `sh -c script`; rejects on a non-zero status with its output. */
  sh(script: string, timeoutMs?: number): Promise<string>;
  spawn(cmd: string[]): GuestProcess;
  screendump(head: number): Promise<ScreenDump>;
  consoleLog(): string;
  /** Power cut: QMP quit, no warning to the guest. */
  powerCut(): Promise<void>;
  /** Orderly poweroff from inside, then the harder ways. */
  stop(): Promise<void>;
  readonly exited: Promise<void>;
}

const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** OVMF's code and a variable-store template, by the names Debian 12 and 13 use. */
export function ovmfFiles(): { code: string; vars: string } {
  for (const [code, vars] of [
    ['/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd'],
    ['/usr/share/OVMF/OVMF_CODE.fd', '/usr/share/OVMF/OVMF_VARS.fd'],
  ] as const) {
    if (fs.existsSync(code) && fs.existsSync(vars)) return { code, vars };
  }
  throw new Error('OVMF not found (apt-get install ovmf)');
}

export async function imageVmStart(opts: ImageVmOptions): Promise<ImageVm> {
  const consolePath = path.join(opts.dir, 'console.log');
  const qmpPath = path.join(opts.dir, 'qmp.sock');
  const agentPath = path.join(opts.dir, 'agent.sock');
  for (const p of [qmpPath, agentPath]) fs.rmSync(p, { force: true });
  const ovmf = ovmfFiles();
  const relay = path.join(import.meta.dirname, 'relay.ts');
  // guestfwd with cmd: starts one relay per connection, so the supervisor can reconnect.
  const netdev = ['user', 'id=net0', 'restrict=on'];
  if (opts.brokerPort) netdev.push(`guestfwd=tcp:10.0.2.100:1883-cmd:${process.execPath} ${relay} ${opts.brokerPort}`);
  if (opts.httpPort) netdev.push(`guestfwd=tcp:10.0.2.101:80-cmd:${process.execPath} ${relay} ${opts.httpPort}`);
  const { width, height } = opts.headSize;
  const args = [
    ...qemuArgsBase({ memoryMb: opts.memoryMb, consolePath, qmpPath, agentPath }),
    '-drive',
    `if=pflash,format=raw,unit=0,readonly=on,file=${ovmf.code}`,
    '-drive',
    `if=pflash,format=raw,unit=1,file=${opts.vars}`,
    '-drive',
    `if=none,id=disk0,format=raw,file=${opts.disk}`,
    '-device',
    'virtio-blk-pci,drive=disk0',
    '-netdev',
    netdev.join(','),
    '-device',
    'virtio-net-pci,netdev=net0',
    '-device',
    `virtio-gpu-pci,id=gpu0,max_outputs=${opts.heads},xres=${width},yres=${height}`,
  ];
  // QEMU's option syntax: a comma in a value is written twice.
  if (opts.kernelCmdlineExtra)
    args.push(
      '-smbios',
      `type=11,value=io.systemd.stub.kernel-cmdline-extra=${opts.kernelCmdlineExtra.replaceAll(',', ',,')}`,
    );
  for (const [i, d] of (opts.extraDisks ?? []).entries()) {
    args.push(
      '-drive',
      `if=none,id=extra${i},format=raw,readonly=on,file=${d.file}`,
      '-device',
      `virtio-blk-pci,drive=extra${i},serial=${d.serial}`,
    );
  }
  const startedAt = Date.now();
  const qemu: ChildProcess = spawn('setpriv', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let qemuOutput = '';
  const onOutput = (d: Buffer): void => {
    qemuOutput = (qemuOutput + d.toString('utf8')).slice(-4000);
  };
  qemu.stdout?.on('data', onOutput);
  qemu.stderr?.on('data', onOutput);
  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    qemu.on('exit', (code, signal) => {
      exitInfo = `QEMU exited (code ${code}, signal ${signal})${qemuOutput.trim() ? `: ${qemuOutput.trim()}` : ''}`;
      resolve();
    });
    qemu.on('error', (e) => {
      exitInfo = `QEMU could not start: ${e.message}`;
      resolve();
    });
  });
  const killHook = (): void => {
    if (!exitInfo) qemu.kill('SIGKILL');
  };
  process.on('exit', killHook);
  // A guest that resets itself ends QEMU (-no-reboot) without a stop: its hook goes with it.
  void exited.then(() => process.off('exit', killHook));

  const connect = async (p: string): Promise<import('node:net').Socket> => {
    for (let i = 0; ; i++) {
      if (exitInfo) throw new Error(exitInfo);
      try {
        return await connectUnix(p);
      } catch (e) {
        if (i > 200) throw e;
        await sleep(50);
      }
    }
  };
  const qmp = new QmpClient(await connect(qmpPath));
  await qmp.ready;
  const agent = new AgentClient(await connect(agentPath));
  void exited.then(() => {
    agent.close(new Error(exitInfo ?? 'QEMU exited'));
    qmp.close();
  });
  const consoleLog = (): string => {
    try {
      return fs.readFileSync(consolePath, 'utf8');
    } catch {
      return '';
    }
  };

  const exec = async (cmd: string[], o: { timeoutMs?: number; stdin?: string } = {}): Promise<ExecResult> => {
    const proc = agent.spawn(cmd, '/', { PATH: GUEST_PATH, HOME: '/root', SYSTEMD_COLORS: '0' });
    if (o.stdin !== undefined) proc.write(o.stdin);
    proc.end();
    const timeoutMs = o.timeoutMs ?? 60000;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        proc.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            proc.kill('SIGKILL');
            reject(new Error(`guest command timed out after ${timeoutMs} ms: ${cmd.join(' ')}`));
          }, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };

  let stopping: Promise<void> | undefined;
  const vm: ImageVm = {
    startedAt,
    exited,
    agentReady: async (timeoutMs) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          agent.ready,
          exited.then(() => {
            throw new Error(exitInfo);
          }),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`the test agent was not ready in ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    exec,
    sh: async (script, timeoutMs) => {
      const r = await exec(['/bin/sh', '-c', script], timeoutMs === undefined ? {} : { timeoutMs });
      if (r.code !== 0)
        throw new Error(`guest: ${script}: exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(-800)}`);
      return r.stdout;
    },
    spawn: (cmd) => agent.spawn(cmd, '/', { PATH: GUEST_PATH, HOME: '/root' }),
    screendump: async (head) => {
      const file = path.join(opts.dir, `screendump-${head}.ppm`);
      await qmp.command('screendump', { filename: file, device: 'gpu0', head });
      try {
        return parsePpm(fs.readFileSync(file));
      } finally {
        fs.rmSync(file, { force: true });
      }
    },
    consoleLog,
    powerCut: async () => {
      if (!exitInfo) await Promise.race([qmp.command('quit').catch(() => {}), sleep(2000)]);
      await Promise.race([exited, sleep(5000)]);
      if (!exitInfo) qemu.kill('SIGKILL');
      await exited;
      process.off('exit', killHook);
    },
    stop: () => {
      stopping ??= (async () => {
        if (!exitInfo) {
          agent.send({ id: 0, op: 'spawn', cmd: ['/bin/systemctl', 'poweroff'], cwd: '/', env: { PATH: GUEST_PATH } });
          await Promise.race([exited, sleep(60000)]);
        }
        await vm.powerCut();
      })();
      return stopping;
    },
  };
  return vm;
}

/** Mean brightness (0-255) of a screendump, sampling every 7th pixel. */
export function brightness(shot: ScreenDump): number {
  let sum = 0;
  let n = 0;
  for (let i = 0; i + 2 < shot.rgb.length; i += 21) {
    sum += (shot.rgb[i] ?? 0) + (shot.rgb[i + 1] ?? 0) + (shot.rgb[i + 2] ?? 0);
    n += 3;
  }
  return n === 0 ? 0 : sum / n;
}
