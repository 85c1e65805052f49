/**
 * Named commands (`ping`, `play`, `decode.status`, ...) that extensions offer and transports
 * (MQTT, HTTP, the CLI) invoke. A transport never knows which extension answers: it hands the
 * name and arguments here and gets exactly one reply back, success or a coded error.
 */

/** Where a request came from, for logs and for commands that answer differently per transport. */
export interface CommandOrigin {
  readonly transport: 'mqtt' | 'http' | 'cli' | 'internal';
  /** Free text: a topic, a remote address. */
  readonly from?: string;
}

export type CommandHandler = (args: Record<string, unknown>, origin: CommandOrigin) => unknown | Promise<unknown>;

export interface CommandDefinition {
  readonly name: string;
  readonly description: string;
  readonly handler: CommandHandler;
}

export type CommandReply = { ok: true; result: unknown } | { ok: false; error: { code: string; message: string } };

/** A failure a command reports on purpose: the code is stable and documented, the message says what was wrong. */
export class CommandError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'CommandError';
    this.code = code;
  }
}

export class CommandRegistry {
  readonly #commands = new Map<string, CommandDefinition>();

  /** Offers a command; the returned function withdraws it (call it from the extension's stop). */
  register(definition: CommandDefinition): () => void {
    if (this.#commands.has(definition.name)) {
      throw new Error(`command ${definition.name} is already registered`);
    }
    this.#commands.set(definition.name, definition);
    return () => {
      if (this.#commands.get(definition.name) === definition) this.#commands.delete(definition.name);
    };
  }

  has(name: string): boolean {
    return this.#commands.has(name);
  }

  list(): Array<{ name: string; description: string }> {
    return [...this.#commands.values()]
      .map(({ name, description }) => ({ name, description }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Runs a command. Never throws: every outcome, including a handler's bug, is one reply. */
  async invoke(name: string, args: Record<string, unknown>, origin: CommandOrigin): Promise<CommandReply> {
    const command = this.#commands.get(name);
    if (!command) {
      const known = this.list()
        .map((c) => c.name)
        .join(', ');
      return { ok: false, error: { code: 'ERR_UNKNOWN_COMMAND', message: `no command "${name}"; known: ${known}` } };
    }
    try {
      return { ok: true, result: (await command.handler(args, origin)) ?? null };
    } catch (error) {
      if (error instanceof CommandError) return { ok: false, error: { code: error.code, message: error.message } };
      const e = error as { code?: unknown; message?: unknown };
      const message = String(e?.message ?? error);
      if (typeof e?.code === 'string' && e.code.startsWith('ERR_')) {
        return { ok: false, error: { code: e.code, message: `${name}: ${message}` } };
      }
      // The native addon's errors lead with their code: "ERR_DECODE_OPEN: a.mp4: ...".
      const coded = /^(ERR_[A-Z0-9_]+): (.*)$/s.exec(message);
      if (coded) return { ok: false, error: { code: coded[1] as string, message: `${name}: ${coded[2]}` } };
      return { ok: false, error: { code: 'ERR_INTERNAL', message: `${name}: ${message}` } };
    }
  }
}
