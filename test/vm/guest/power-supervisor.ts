// The supervisor's display extension in the guest, as the appliance starts it (the controller,
// its command registry and the status document), with commands taken from stdin instead of
// MQTT: loading the MQTT stack over 9p under TCG takes minutes (see supervisor-hotplug in
// cases.ts). One JSON request per stdin line, {"id", "command", "args"} or {"id", "status": true};
// one JSON reply per line on stdout, {"id", "reply"} or {"id", "outputs"}. The log goes to stderr.
import readline from 'node:readline';
import { configLoad } from '../../../src/config/load.ts';
import { displayCreate } from '../../../src/extensions/display.ts';
import { loggingCreate } from '../../../src/log/logger.ts';
import { loadAddon } from '../../../src/native/addon.ts';
import { StatusTracker } from '../../../src/status/status.ts';
import { Controller } from '../../../src/supervisor/controller.ts';

const { config } = configLoad({ env: process.env, defaultPath: '/nonexistent/config.json' });
const logging = loggingCreate({
  level: 'debug',
  ringSize: 1000,
  sink: { write: (line) => process.stderr.write(line.endsWith('\n') ? line : `${line}\n`) },
});
const controller = new Controller({
  config,
  logger: logging.logger,
  logRing: logging.ring,
  addon: loadAddon(),
  extensions: [{ name: 'display', essential: true, create: displayCreate }],
});
const status = new StatusTracker({
  bus: controller.bus,
  config,
  versions: { app: 'vm', addon: 'vm', node: process.version },
  startedAt: Date.now(),
});
await controller.start();
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);

const say = (message: unknown): void => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
};
for await (const line of readline.createInterface({ input: process.stdin })) {
  const request = JSON.parse(line) as {
    id: number;
    command?: string;
    args?: Record<string, unknown>;
    status?: boolean;
  };
  if (request.status) {
    say({ id: request.id, outputs: status.document().outputs });
  } else if (request.command) {
    say({
      id: request.id,
      reply: await controller.commands.invoke(request.command, request.args ?? {}, {
        transport: 'internal',
        from: 'test/vm',
      }),
    });
  }
}
await controller.stop('stdin closed');
logging.flush();
