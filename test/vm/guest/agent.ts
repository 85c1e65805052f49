// Guest agent: runs inside the test VM (started by init.sh with the repository's Node 24) and
// runs commands for the host over a virtio-serial port, one JSON object per line.
//
//   host -> guest  {"id":1,"op":"spawn","cmd":["ls","-l"],"cwd":"/work/main","env":{...}}
//                  {"id":1,"op":"stdin","data":"text"}      {"id":1,"op":"stdin","eof":true}
//                  {"id":1,"op":"kill","signal":"SIGTERM"}
//   guest -> host  {"ev":"ready"}                            once, when the agent is up
//                  {"id":1,"ev":"stdout"|"stderr","data":"text"}
//                  {"id":1,"ev":"exit","code":0,"signal":null}
//                  {"id":1,"ev":"error","message":"..."}    the command could not be started
//
// Kept dependency-free and self-contained: it runs before anything else in the guest and
// its own failures can only be seen in the console log.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';

interface SpawnRequest {
  id: number;
  op: 'spawn';
  cmd: string[];
  cwd?: string;
  env?: Record<string, string>;
}
interface StdinRequest {
  id: number;
  op: 'stdin';
  data?: string;
  eof?: boolean;
}
interface KillRequest {
  id: number;
  op: 'kill';
  signal?: string;
}
type Request = SpawnRequest | StdinRequest | KillRequest;

const portPath = process.argv[2];
if (!portPath) {
  console.error('agent: usage: agent.ts <virtio-serial port>');
  process.exit(2);
}

const log = (message: string): void => {
  console.error(`multihead-agent: ${message}`);
};

const fd = fs.openSync(portPath, 'r+');
const children = new Map<number, ChildProcess>();

// Writes go through one queue: interleaved partial writes from concurrent callbacks
// would corrupt the line framing the host relies on.
let sendQueue: Buffer[] = [];
let sending = false;
const send = (message: object): void => {
  sendQueue.push(Buffer.from(`${JSON.stringify(message)}\n`));
  if (!sending) flush();
};
const flush = (): void => {
  if (sendQueue.length === 0) {
    sending = false;
    return;
  }
  sending = true;
  const chunk = Buffer.concat(sendQueue);
  sendQueue = [];
  writeAll(chunk, () => flush());
};
const writeAll = (chunk: Buffer, done: () => void): void => {
  fs.write(fd, chunk, 0, chunk.length, null, (err, written) => {
    if (err) {
      // The port refuses writes while the host end is not connected; the host reconnects,
      // so keep the data and try again rather than dropping output.
      setTimeout(() => writeAll(chunk, done), 100);
      return;
    }
    if (written < chunk.length) writeAll(chunk.subarray(written), done);
    else done();
  });
};

const handle = (request: Request): void => {
  switch (request.op) {
    case 'spawn':
      startChild(request);
      return;
    case 'stdin': {
      const child = children.get(request.id);
      if (!child?.stdin) return;
      if (request.data !== undefined) child.stdin.write(request.data);
      if (request.eof) child.stdin.end();
      return;
    }
    case 'kill': {
      const child = children.get(request.id);
      if (!child?.pid) return;
      const signal = (request.signal ?? 'SIGTERM') as NodeJS.Signals;
      // The child leads its own process group, so shells and their children go too.
      try {
        process.kill(-child.pid, signal);
      } catch {
        child.kill(signal);
      }
      return;
    }
  }
};

const startChild = (request: SpawnRequest): void => {
  const { id, cmd } = request;
  const [file, ...args] = cmd;
  if (!file) {
    send({ id, ev: 'error', message: 'empty command' });
    return;
  }
  let child: ChildProcess;
  try {
    child = spawn(file, args, {
      cwd: request.cwd ?? '/',
      env: request.env ?? {},
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
  } catch (err) {
    send({ id, ev: 'error', message: String(err) });
    return;
  }
  children.set(id, child);
  let failed = false;
  child.on('error', (err) => {
    failed = true;
    children.delete(id);
    send({ id, ev: 'error', message: err.message });
  });
  const streams: Array<['stdout' | 'stderr', NodeJS.ReadableStream | null]> = [
    ['stdout', child.stdout],
    ['stderr', child.stderr],
  ];
  let open = 0;
  let exit: { code: number | null; signal: string | null } | undefined;
  const finish = (): void => {
    if (open === 0 && exit && !failed) {
      children.delete(id);
      send({ id, ev: 'exit', ...exit });
    }
  };
  for (const [name, stream] of streams) {
    if (!stream) continue;
    open++;
    const decoder = new StringDecoder('utf8');
    stream.on('data', (chunk: Buffer) => {
      const data = decoder.write(chunk);
      if (data) send({ id, ev: name, data });
    });
    stream.on('end', () => {
      const rest = decoder.end();
      if (rest) send({ id, ev: name, data: rest });
      open--;
      finish();
    });
  }
  // A child that exits before the host writes to its stdin must not crash the agent.
  child.stdin?.on('error', () => {});
  // 'close' would wait for grandchildren holding the pipes; report the exit once the
  // pipes are drained instead, which is what the host waits for anyway.
  child.on('exit', (code, signal) => {
    exit = { code, signal };
    finish();
  });
};

// Blocking reads on the port run in libuv's thread pool; a read returns 0 while the host
// end is disconnected, which is not the end of the conversation.
let pending = '';
const readBuffer = Buffer.alloc(65536);
const readLoop = (): void => {
  fs.read(fd, readBuffer, 0, readBuffer.length, null, (err, bytes) => {
    if (err) {
      log(`read failed: ${err.message}`);
      setTimeout(readLoop, 100);
      return;
    }
    if (bytes === 0) {
      setTimeout(readLoop, 50);
      return;
    }
    pending += readBuffer.toString('utf8', 0, bytes);
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line) {
        try {
          handle(JSON.parse(line) as Request);
        } catch (e) {
          log(`bad request ${JSON.stringify(line)}: ${String(e)}`);
        }
      }
      newline = pending.indexOf('\n');
    }
    readLoop();
  });
};

readLoop();
log(`ready on ${portPath} (node ${process.version})`);
send({ ev: 'ready' });
