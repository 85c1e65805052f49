import type { IPublishPacket } from 'mqtt';
import type { Logger } from '../log/logger.ts';
import type { CommandRegistry, CommandReply } from '../supervisor/commands.ts';
import { type Contract, problemsText } from './contract.ts';
import { PAYLOAD_LIMITS, payloadDecode } from './payload.ts';
import { RateLimiter } from './rate-limit.ts';

/** The reply payload (components.schemas.CommandReply). */
export type ReplyPayload = { id?: string; device: string; command: string } & CommandReply;

export interface ReplyTarget {
  readonly topic: string;
  /** MQTT v5 Correlation Data of the request, echoed as is. */
  readonly correlationData?: Buffer;
}

export interface CommandRouterDeps {
  readonly contract: Contract;
  readonly commands: CommandRegistry;
  readonly deviceId: string;
  readonly logger: Logger;
  /** Sends the one reply. */
  readonly reply: (target: ReplyTarget, payload: ReplyPayload) => void;
  /** A request with no address to answer to: reported on `events` instead. */
  readonly unanswered: (command: string, error: { code: string; message: string }, from: string) => void;
  /** Requests per command: `burst` at once, then `perSecond`. */
  readonly rate?: { burst: number; perSecond: number };
  readonly now?: () => number;
}

/** How long a request id is remembered: a replayed request within it is answered from memory, not run again. */
const REPLAY_WINDOW_MS = 10 * 60_000;
const REPLAY_MAX = 1000;
const UNKNOWN_BUCKET = '(not in the contract)';

/**
 * Turns `cmd/<name>` messages into CommandRegistry calls. Whatever arrives — bad bytes, bad
 * JSON, a wrong argument, an unknown command, a flood — ends in exactly one reply (or, with no
 * reply address at all, one event); nothing a sender does can throw out of here.
 */
export class CommandRouter {
  readonly #deps: CommandRouterDeps;
  readonly #limiter: RateLimiter;
  readonly #now: () => number;
  /** Replies by reply topic + id, oldest first (Map keeps insertion order). */
  readonly #replies = new Map<string, { at: number; payload: ReplyPayload }>();
  /** Requests being run now, so a redelivery that arrives meanwhile waits for the same reply. */
  readonly #running = new Map<string, Promise<ReplyPayload>>();

  constructor(deps: CommandRouterDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#limiter = new RateLimiter({ ...(deps.rate ?? { burst: 20, perSecond: 5 }), now: this.#now });
  }

  async handle(
    command: string,
    topic: string,
    payload: Buffer,
    packet: Pick<IPublishPacket, 'properties'>,
  ): Promise<void> {
    try {
      await this.#handle(command, topic, payload, packet);
    } catch (error) {
      // Only a bug here can get this far; still no crash, and still a trace.
      this.#deps.logger.error(
        { err: error, command },
        `command ${command} from ${topic} failed: ${(error as Error).message}`,
      );
    }
  }

  async #handle(
    command: string,
    topic: string,
    payload: Buffer,
    packet: Pick<IPublishPacket, 'properties'>,
  ): Promise<void> {
    const { contract, commands, logger } = this.#deps;
    const v5Topic = packet.properties?.responseTopic;
    const correlationData = packet.properties?.correlationData;
    let target: ReplyTarget | undefined =
      typeof v5Topic === 'string' && replyTopicValid(v5Topic)
        ? { topic: v5Topic, ...(correlationData ? { correlationData } : {}) }
        : undefined;
    let id: string | undefined;
    const answer = (reply: CommandReply): void => {
      const body: ReplyPayload = {
        ...(id !== undefined ? { id } : {}),
        device: this.#deps.deviceId,
        command,
        ...reply,
      };
      if (!target) {
        if (!reply.ok) this.#deps.unanswered(command, reply.error, topic);
        else logger.warn({ command, topic }, `command ${command} from ${topic} ran but had no reply address`);
        return;
      }
      this.#deps.reply(target, body);
    };
    const fail = (code: string, message: string): void => answer({ ok: false, error: { code, message } });

    const decoded = payloadDecode(payload, PAYLOAD_LIMITS.commandBytes);
    if (!decoded.ok) return fail(decoded.code, decoded.message);
    const request = decoded.value;
    if (typeof request !== 'object' || request === null || Array.isArray(request)) {
      return fail('ERR_INVALID_REQUEST', 'request must be a JSON object {id?, replyTo?, args?}');
    }
    // Reply fields are taken even from an otherwise invalid request, so its error reaches the sender.
    const fields = request as { id?: unknown; replyTo?: unknown };
    if (typeof fields.id === 'string' && fields.id.length > 0 && fields.id.length <= 128) id = fields.id;
    if (!target && typeof fields.replyTo === 'string' && replyTopicValid(fields.replyTo)) {
      target = { topic: fields.replyTo };
    }

    const known = contract.commands.includes(command);
    if (!this.#limiter.take(known ? command : UNKNOWN_BUCKET)) {
      return fail('ERR_RATE_LIMITED', `too many ${command} requests; try again in a second`);
    }
    if (!known) {
      return fail('ERR_UNKNOWN_COMMAND', `no command "${command}"; the contract has ${contract.commands.join(', ')}`);
    }
    const envelope = contract.validate('CommandRequest', request);
    if (!envelope.ok) return fail('ERR_INVALID_REQUEST', `request ${problemsText(envelope.problems)}`);
    const args = contract.validateCommand(command, request);
    if (args && !args.ok) return fail('ERR_INVALID_ARGS', `${command}: ${problemsText(args.problems)}`);

    const replayKey = id !== undefined && target ? `${target.topic}\u0000${id}` : undefined;
    if (replayKey) {
      this.#repliesPrune();
      const earlier = this.#replies.get(replayKey);
      if (earlier) {
        logger.info({ command, id }, `request ${id} seen before; answering from memory without running it again`);
        if (target) this.#deps.reply(target, earlier.payload);
        return;
      }
      const running = this.#running.get(replayKey);
      if (running) {
        // A QoS 1 redelivery while the first copy still runs: one run, the same reply twice.
        logger.info({ command, id }, `request ${id} is running; answering with its reply when done`);
        const payload = await running;
        if (target) this.#deps.reply(target, payload);
        return;
      }
    }
    if (!commands.has(command)) {
      return fail('ERR_NOT_AVAILABLE', `${command} is part of the contract but nothing on this device offers it (yet)`);
    }
    const invoked = commands.invoke(command, ((request as { args?: unknown }).args ?? {}) as Record<string, unknown>, {
      transport: 'mqtt',
      from: topic,
    });
    if (replayKey) {
      this.#running.set(
        replayKey,
        invoked.then((r) => ({ ...(id !== undefined ? { id } : {}), device: this.#deps.deviceId, command, ...r })),
      );
    }
    let reply: Awaited<typeof invoked>;
    try {
      reply = await invoked;
    } finally {
      if (replayKey) this.#running.delete(replayKey);
    }
    logger.debug({ command, ok: reply.ok, from: topic }, `command ${command}: ${reply.ok ? 'ok' : reply.error.code}`);
    if (replayKey) {
      const body: ReplyPayload = {
        ...(id !== undefined ? { id } : {}),
        device: this.#deps.deviceId,
        command,
        ...reply,
      };
      this.#replies.set(replayKey, { at: this.#now(), payload: body });
    }
    answer(reply);
  }

  #repliesPrune(): void {
    const oldest = this.#now() - REPLAY_WINDOW_MS;
    for (const [key, entry] of this.#replies) {
      if (entry.at >= oldest && this.#replies.size <= REPLAY_MAX) break;
      this.#replies.delete(key);
    }
  }
}

/** A topic we may publish a reply to: no wildcards, not a $SYS-style topic, not absurdly long. */
export function replyTopicValid(topic: string): boolean {
  return (
    topic.length > 0 &&
    topic.length <= 256 &&
    !/[+#]/.test(topic) &&
    !topic.includes('\u0000') &&
    !topic.startsWith('$')
  );
}
