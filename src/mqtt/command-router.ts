import { createHash } from 'node:crypto';
import type { IPublishPacket } from 'mqtt';
import type { Logger } from '../log/logger.ts';
import { RateLimiter } from '../rate-limit.ts';
import type { CommandRegistry, CommandReply } from '../supervisor/commands.ts';
import { type Contract, problemsText } from './contract.ts';
import { PAYLOAD_LIMITS, payloadDecode } from './payload.ts';
import { replyTopic } from './topics.ts';

/** The reply payload (components.schemas.CommandReply). */
export type ReplyPayload = { id?: string; device: string; command: string } & CommandReply;

export interface ReplyTarget {
  /** Where the reply is published: the requester's reply address plus `/<deviceId>`. */
  readonly topic: string;
  /** MQTT v5 Correlation Data of the request, echoed as is. */
  readonly correlationData?: Buffer;
  /**
   * When the request's MQTT v5 Message Expiry runs out (ms, the router's clock): the reply
   * carries what is left of it and is dropped, not sent, once it has passed.
   */
  readonly expiresAt?: number;
}

export interface CommandRouterDeps {
  readonly contract: Contract;
  readonly commands: CommandRegistry;
  readonly deviceId: string;
  /** `mqtt.prefix`: replies may only go under `<prefix>/replies/`. */
  readonly prefix: string;
  readonly logger: Logger;
  /** Sends the one reply. */
  readonly reply: (target: ReplyTarget, payload: ReplyPayload) => void;
  /** A request with no address to answer to: reported on `events` instead. */
  readonly unanswered: (command: string, error: { code: string; message: string }, from: string) => void;
  /** Requests per command: `burst` at once, then `perSecond`. */
  readonly rate?: { burst: number; perSecond: number };
  readonly now?: () => number;
}

type Packet = Pick<IPublishPacket, 'properties'> & { retain?: boolean };

/** How long a request id is remembered: a replayed request within it is answered from memory, not run again. */
const REPLAY_WINDOW_MS = 10 * 60_000;
const REPLAY_MAX = 1000;
const UNKNOWN_BUCKET = '(not in the contract)';

/** A request refused before it runs; becomes its one error reply. */
class Refusal {
  readonly code: string;
  readonly message: string;
  constructor(code: string, message: string) {
    this.code = code;
    this.message = message;
  }
}

/** What arrived, as far as it could be read: enough to answer even a request that is refused. */
interface Request {
  readonly command: string;
  readonly topic: string;
  readonly payload: Buffer;
  target: ReplyTarget | undefined;
  /** Why the reply address given cannot be used (then the request never runs). */
  targetRefused?: string;
  id?: string;
}

/**
 * Turns `cmd/<name>` messages into CommandRegistry calls. Whatever arrives — bad bytes, bad
 * JSON, a wrong argument, an unknown command, a retained or replayed request, a flood — ends in
 * exactly one reply (or, with no usable reply address, one event); nothing a sender does can
 * throw out of here.
 */
export class CommandRouter {
  readonly #deps: CommandRouterDeps;
  readonly #limiter: RateLimiter;
  readonly #now: () => number;
  /** Replies by reply topic + id, oldest first (Map keeps insertion order), with what they answered. */
  readonly #replies = new Map<string, { at: number; fingerprint: string; payload: ReplyPayload }>();
  /** Requests being run now, so a redelivery that arrives meanwhile waits for the same reply. */
  readonly #running = new Map<string, { fingerprint: string; reply: Promise<ReplyPayload> }>();

  constructor(deps: CommandRouterDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#limiter = new RateLimiter({ ...(deps.rate ?? { burst: 20, perSecond: 5 }), now: this.#now });
  }

  async handle(command: string, topic: string, payload: Buffer, packet: Packet): Promise<void> {
    const request: Request = { command, topic, payload, target: undefined };
    try {
      this.#targetFromProperties(request, packet);
      const reply = await this.#run(request, packet);
      if (reply) this.#answer(request, reply);
    } catch (error) {
      if (error instanceof Refusal) {
        this.#answer(request, { ok: false, error: { code: error.code, message: error.message } });
        return;
      }
      // Only a bug here can get this far; still no crash, and still a trace.
      this.#deps.logger.error(
        { err: error, command },
        `command ${command} from ${topic} failed: ${(error as Error).message}`,
      );
    }
  }

  /** The reply, or undefined when it was already sent (a replay answered from memory). */
  async #run(request: Request, packet: Packet): Promise<CommandReply | undefined> {
    const { contract } = this.#deps;
    const { command } = request;
    const body = this.#requestBody(request);
    if (request.targetRefused) throw new Refusal('ERR_REPLY_TOPIC_NOT_ALLOWED', request.targetRefused);
    if (packet.retain) {
      throw new Refusal(
        'ERR_RETAINED',
        `${command} was published retained; commands must not be retained (they would run again on every reconnect) and are never run`,
      );
    }
    const known = contract.commands.includes(command);
    if (!this.#limiter.take(known ? command : UNKNOWN_BUCKET)) {
      throw new Refusal('ERR_RATE_LIMITED', `too many ${command} requests; try again in a second`);
    }
    if (!known) {
      throw new Refusal(
        'ERR_UNKNOWN_COMMAND',
        `no command "${command}"; the contract has ${contract.commands.join(', ')}`,
      );
    }
    const envelope = contract.validate('CommandRequest', body);
    if (!envelope.ok) throw new Refusal('ERR_INVALID_REQUEST', `request ${problemsText(envelope.problems)}`);
    const args = contract.validateCommand(command, body);
    if (args && !args.ok) throw new Refusal('ERR_INVALID_ARGS', `${command}: ${problemsText(args.problems)}`);
    return this.#runOnce(request, ((body as { args?: unknown }).args ?? {}) as Record<string, unknown>);
  }

  /** The decoded request object; takes its id and `replyTo` even when the rest is invalid, so its error reaches the sender. */
  #requestBody(request: Request): object {
    const decoded = payloadDecode(request.payload, PAYLOAD_LIMITS.commandBytes);
    if (!decoded.ok) throw new Refusal(decoded.code, decoded.message);
    const body = decoded.value;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new Refusal('ERR_INVALID_REQUEST', 'request must be a JSON object {id?, replyTo?, args?}');
    }
    const fields = body as { id?: unknown; replyTo?: unknown };
    if (typeof fields.id === 'string' && fields.id.length > 0 && fields.id.length <= 128) request.id = fields.id;
    if (!request.target && !request.targetRefused && typeof fields.replyTo === 'string') {
      this.#targetSet(request, fields.replyTo, {});
    }
    return body;
  }

  #targetFromProperties(request: Request, packet: Packet): void {
    const address = packet.properties?.responseTopic;
    if (typeof address !== 'string') return;
    const correlationData = packet.properties?.correlationData;
    const expiryS = packet.properties?.messageExpiryInterval;
    this.#targetSet(request, address, {
      ...(correlationData ? { correlationData } : {}),
      ...(typeof expiryS === 'number' ? { expiresAt: this.#now() + expiryS * 1000 } : {}),
    });
  }

  #targetSet(request: Request, address: string, extra: Omit<ReplyTarget, 'topic'>): void {
    const topic = replyTopic(address, this.#deps.prefix, this.#deps.deviceId);
    if (topic.ok) request.target = { topic: topic.topic, ...extra };
    else request.targetRefused = topic.message;
  }

  /**
   * Runs the command unless this reply address and id were seen within the replay window: the
   * same request again (a QoS 1 redelivery) gets the first reply without a second run; another
   * request under the same id is refused (ERR_DUPLICATE_ID), never answered with a stale reply.
   */
  async #runOnce(request: Request, args: Record<string, unknown>): Promise<CommandReply | undefined> {
    const { command, id, target } = request;
    const key = id !== undefined && target ? `${target.topic}\u0000${id}` : undefined;
    if (!key) return this.#invoke(request, args);
    const fingerprint = this.#fingerprint(request);
    this.#repliesPrune();
    const earlier = this.#replies.get(key) ?? this.#running.get(key);
    if (earlier && earlier.fingerprint !== fingerprint) {
      throw new Refusal(
        'ERR_DUPLICATE_ID',
        `id ${JSON.stringify(id)} was used within the last 10 minutes by another request to this reply address; use a new id`,
      );
    }
    const { logger } = this.#deps;
    if (earlier && 'payload' in earlier) {
      logger.info({ command, id }, `request ${id} seen before; answering from memory without running it again`);
      this.#send(request, earlier.payload);
      return undefined;
    }
    if (earlier) {
      // A QoS 1 redelivery while the first copy still runs: one run, the same reply twice.
      logger.info({ command, id }, `request ${id} is running; answering with its reply when done`);
      this.#send(request, await earlier.reply);
      return undefined;
    }
    const invoked = this.#invoke(request, args);
    const reply = invoked.then((r) => this.#body(request, r));
    this.#running.set(key, { fingerprint, reply });
    try {
      this.#replies.set(key, { at: this.#now(), fingerprint, payload: await reply });
    } finally {
      this.#running.delete(key);
    }
    return invoked;
  }

  async #invoke(request: Request, args: Record<string, unknown>): Promise<CommandReply> {
    const { commands, logger } = this.#deps;
    const { command, topic } = request;
    if (!commands.has(command)) {
      return {
        ok: false,
        error: {
          code: 'ERR_NOT_AVAILABLE',
          message: `${command} is part of the contract but nothing on this device offers it (yet)`,
        },
      };
    }
    const reply = await commands.invoke(command, args, { transport: 'mqtt', from: topic });
    logger.debug({ command, ok: reply.ok, from: topic }, `command ${command}: ${reply.ok ? 'ok' : reply.error.code}`);
    return reply;
  }

  /** What makes two requests the same request: where it came from, the command and every payload byte. */
  #fingerprint(request: Request): string {
    return createHash('sha256')
      .update(request.topic)
      .update('\u0000')
      .update(request.command)
      .update('\u0000')
      .update(request.payload)
      .digest('hex');
  }

  #body(request: Request, reply: CommandReply): ReplyPayload {
    return {
      ...(request.id !== undefined ? { id: request.id } : {}),
      device: this.#deps.deviceId,
      command: request.command,
      ...reply,
    };
  }

  #answer(request: Request, reply: CommandReply): void {
    if (request.target) {
      this.#send(request, this.#body(request, reply));
      return;
    }
    const { command, topic } = request;
    if (!reply.ok) this.#deps.unanswered(command, reply.error, topic);
    else this.#deps.logger.warn({ command, topic }, `command ${command} from ${topic} ran but had no reply address`);
  }

  #send(request: Request, payload: ReplyPayload): void {
    if (request.target) this.#deps.reply(request.target, payload);
  }

  #repliesPrune(): void {
    const oldest = this.#now() - REPLAY_WINDOW_MS;
    for (const [key, entry] of this.#replies) {
      if (entry.at >= oldest && this.#replies.size <= REPLAY_MAX) break;
      this.#replies.delete(key);
    }
  }
}
