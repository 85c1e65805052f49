import test from 'ava';
import { CommandError, CommandRegistry } from '../src/supervisor/commands.ts';

const origin = { transport: 'internal' } as const;

test('commands: a registered command answers with its result', async (t) => {
  const registry = new CommandRegistry();
  registry.register({ name: 'echo', description: 'echo', handler: (args) => ({ got: args.value }) });
  t.deepEqual(await registry.invoke('echo', { value: 3 }, origin), { ok: true, result: { got: 3 } });
});

test('commands: an unknown command names the known ones', async (t) => {
  const registry = new CommandRegistry();
  registry.register({ name: 'ping', description: 'ping', handler: () => 'pong' });
  const reply = await registry.invoke('pnig', {}, origin);
  t.false(reply.ok);
  t.like(reply, { error: { code: 'ERR_UNKNOWN_COMMAND' } });
  t.regex(reply.ok ? '' : reply.error.message, /no command "pnig"; known: ping/);
});

test('commands: a CommandError keeps its code, a bug becomes ERR_INTERNAL with the command named', async (t) => {
  const registry = new CommandRegistry();
  registry.register({
    name: 'refuse',
    description: '',
    handler: () => {
      throw new CommandError('ERR_BAD_ARGS', 'output "X" is not driven');
    },
  });
  registry.register({
    name: 'buggy',
    description: '',
    handler: async () => {
      throw new TypeError('x is undefined');
    },
  });
  t.deepEqual(await registry.invoke('refuse', {}, origin), {
    ok: false,
    error: { code: 'ERR_BAD_ARGS', message: 'output "X" is not driven' },
  });
  t.deepEqual(await registry.invoke('buggy', {}, origin), {
    ok: false,
    error: { code: 'ERR_INTERNAL', message: 'buggy: x is undefined' },
  });
});

test('commands: withdrawing a command and registering a duplicate', async (t) => {
  const registry = new CommandRegistry();
  const withdraw = registry.register({ name: 'a', description: '', handler: () => 1 });
  t.throws(() => registry.register({ name: 'a', description: '', handler: () => 2 }), {
    message: /already registered/,
  });
  withdraw();
  t.false(registry.has('a'));
  t.like(await registry.invoke('a', {}, origin), { ok: false });
});

test('commands: an addon error keeps the code it leads with', async (t) => {
  const registry = new CommandRegistry();
  registry.register({
    name: 'open',
    description: '',
    handler: () => {
      throw new Error('ERR_DECODE_OPEN: /x.mp4: cannot open: No such file or directory');
    },
  });
  t.deepEqual(await registry.invoke('open', {}, origin), {
    ok: false,
    error: { code: 'ERR_DECODE_OPEN', message: 'open: /x.mp4: cannot open: No such file or directory' },
  });
});
