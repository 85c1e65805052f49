import test from 'ava';
import { displayCreate } from '../src/extensions/display.ts';
import { playbackCreate } from '../src/extensions/playback.ts';
import { systemdCreate } from '../src/extensions/systemd.ts';
import { loadAddon } from '../src/native/addon.ts';
import { notifyListen } from './helpers/notify-socket.ts';
import { sleep, supervisorStart, until } from './helpers/supervisor.ts';

process.env.MULTIHEAD_TEST_HOOKS = '1';
const addon = loadAddon();

const gaps = (times: number[]): number[] => times.slice(1).map((t, i) => t - (times[i] as number));

// Serial: NOTIFY_SOCKET is process-wide, and so is the frame-loop stall.
test.serial(
  'READY once frames show, STATUS on change, WATCHDOG pings that stop while native loops stall, STOPPING',
  async (t) => {
    const listener = await notifyListen(t);
    // The addon's sdNotify reads NOTIFY_SOCKET from the process environment, as under systemd.
    process.env.NOTIFY_SOCKET = listener.path;
    process.env.WATCHDOG_USEC = '400000';
    t.teardown(() => {
      delete process.env.NOTIFY_SOCKET;
      delete process.env.WATCHDOG_USEC;
    });
    const sup = await supervisorStart(
      t,
      [
        { name: 'playback', create: playbackCreate },
        { name: 'display', create: displayCreate },
        { name: 'systemd', create: (c) => systemdCreate(c) },
      ],
      { decode: { hardware: 'software' }, preview: { intervalS: 0 }, playback: { demo: true } },
    );
    const texts = () => listener.messages.map((m) => m.text);
    const ready = await until(() => listener.messages.find((m) => m.text.startsWith('READY=1')), 'READY=1', 12_000);
    t.is(ready.text, 'READY=1\nSTATUS=playing on 2/2 output(s)');
    t.is(texts().filter((m) => m.startsWith('READY=1')).length, 1);
    const pingTimes = () => listener.messages.filter((m) => m.text === 'WATCHDOG=1').map((m) => m.at);
    // Pings from the start, before and after READY=1 (which comes within a few pings now).
    await until(() => (pingTimes().length >= 2 ? true : undefined), 'two watchdog pings', 3000);
    await sleep(1000);
    const steady = gaps(pingTimes().filter((at) => at > ready.at));
    t.true(steady.length >= 3);
    t.true(Math.max(...steady) < 600, `a ping every 200 ms (gaps ${steady.join(', ')})`);

    // A deadlocked native loop: the JS event loop still runs, the pings must not.
    const stallAt = Date.now();
    addon.frameLoopsStall(4500);
    await sleep(5500);
    const during = pingTimes().filter((at) => at > stallAt + 2300 && at < stallAt + 4400);
    t.deepEqual(during, [], 'no ping while the frame loops have been stuck for 2 s or more');
    t.true(sup.lines.some((l) => /watchdog ping withheld: frame loop vblank stalled/.test(l)));
    // The same judgement the LED, /healthz and MQTT status read: the stall is an error there too.
    t.true(
      texts().some((m) => /^STATUS=.*error: frame loop vblank stalled/.test(m)),
      `STATUS= names the stall (${texts()
        .filter((m) => m.startsWith('STATUS='))
        .join(' | ')})`,
    );
    const after = pingTimes().filter((at) => at > stallAt + 4600);
    t.true(after.length >= 2, 'pings resume once the loops go round again');
    t.true(sup.lines.some((l) => l.includes('watchdog pings resumed')));
    await sup.stop();
    // Datagrams reach the listener a moment later.
    await until(() => texts().includes('STOPPING=1'), 'STOPPING=1', 3000);
    await sleep(300);
    t.is(texts().at(-1), 'STOPPING=1', 'nothing after STOPPING=1');
  },
);

test.serial('STATUS follows the summary; no NOTIFY_SOCKET means no notify at all', async (t) => {
  const sent: string[] = [];
  const sup = await supervisorStart(
    t,
    [
      {
        name: 'systemd',
        create: (c) =>
          systemdCreate(c, {
            notify: (s) => {
              sent.push(s);
              return true;
            },
            env: { NOTIFY_SOCKET: '/run/fake', WATCHDOG_USEC: '100000', WATCHDOG_PID: '1' },
            frameLoops: () => [],
            pid: 4242,
          }),
      },
    ],
    {},
  );
  const bus = sup.controller.bus;
  const screens = {
    kind: 'virtual' as const,
    outputs: () => [{ name: 'Virtual-1', width: 64, height: 64, refresh: 60 }],
    play: () => {},
    snapshotJpeg: async () => undefined,
    stats: () => [],
  };
  bus.emit('display.ready', { mode: 'virtual', reason: 'test', screens });
  t.deepEqual(sent, [], 'not ready before the first output counters');
  bus.emit('output.stats', { outputs: [{ name: 'Virtual-1', frames: 0, dropped: 0 }] });
  t.deepEqual(sent, ['READY=1\nSTATUS=nothing to play on 1 output(s); degraded: nothing to play: no content assigned']);
  bus.emit('playback.changed', { output: 'Virtual-1', source: 'clip.mp4', reason: 'test' });
  bus.emit('output.stats', { outputs: [{ name: 'Virtual-1', frames: 30, dropped: 0 }] });
  t.is(sent.at(-1), 'STATUS=playing on 1/1 output(s)');
  const count = sent.length;
  bus.emit('output.stats', { outputs: [{ name: 'Virtual-1', frames: 60, dropped: 0 }] });
  t.is(sent.length, count, 'the same summary is not sent again');
  await sleep(300);
  t.false(sent.includes('WATCHDOG=1'), 'WATCHDOG_PID names another process: no pings');
  await sup.stop();
  t.is(sent.at(-1), 'STOPPING=1');

  const none: string[] = [];
  const quiet = await supervisorStart(t, [
    {
      name: 'systemd',
      create: (c) =>
        systemdCreate(c, {
          notify: (s) => {
            none.push(s);
            return false;
          },
          env: {},
        }),
    },
  ]);
  await quiet.stop();
  t.deepEqual(none, []);
});

test.serial('an unreachable NOTIFY_SOCKET is logged once and the supervisor runs on', async (t) => {
  process.env.NOTIFY_SOCKET = '/nonexistent/notify';
  process.env.WATCHDOG_USEC = '100000';
  t.teardown(() => {
    delete process.env.NOTIFY_SOCKET;
    delete process.env.WATCHDOG_USEC;
  });
  const sup = await supervisorStart(t, [{ name: 'systemd', create: (c) => systemdCreate(c) }]);
  await sleep(400);
  t.is(sup.controller.state, 'running');
  const failures = sup.lines.filter((l) => l.includes('"code":"ERR_SD_NOTIFY"'));
  t.is(failures.length, 1, 'said once, not per ping');
  t.regex(failures[0] ?? '', /\/nonexistent\/notify/);
});

test.serial('health hears of the first frame at once, not at the next 5 s counter round', async (t) => {
  const sup = await supervisorStart(
    t,
    [
      { name: 'playback', create: playbackCreate },
      { name: 'display', create: displayCreate },
    ],
    { decode: { hardware: 'software' }, preview: { intervalS: 0 }, playback: { demo: true } },
    { start: false },
  );
  const rounds: number[][] = [];
  sup.controller.bus.on('output.stats', ({ outputs }) => rounds.push(outputs.map((o) => o.frames)));
  await sup.controller.start();
  const first = await until(
    () => rounds.find((frames) => frames.some((n) => n > 0)),
    'output stats with a frame',
    12_000,
  );
  // The demo shows at most 60 frames a second: a report from the 5 s round would carry hundreds.
  t.true(Math.max(...first) <= 60, `the first report with frames came ${Math.max(...first)} frames after the first`);
  t.is(rounds.indexOf(first), 0, 'no earlier round without frames');
  t.true(
    first.every((n) => n > 0),
    `every output's first frame in the first report (${first.join(', ')})`,
  );
});
