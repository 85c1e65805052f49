import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parse } from 'yaml';

/** The AsyncAPI document whose schemas are the contract; docs/mqtt.md explains it. */
export const CONTRACT_PATH = new URL('../../docs/asyncapi.yaml', import.meta.url).pathname;

/** Payloads with a schema of their own in components.schemas. */
export type ContractSchemaName =
  | 'State'
  | 'Status'
  | 'Telemetry'
  | 'Event'
  | 'DesiredConfig'
  | 'ReportedConfig'
  | 'Job'
  | 'CommandRequest'
  | 'CommandReply';

export interface ValidationProblem {
  /** JSON pointer into the payload ("/args/limit"); "" for the payload itself. */
  readonly path: string;
  readonly message: string;
}

export type Validation = { ok: true } | { ok: false; problems: ValidationProblem[] };

export interface Contract {
  /** Every command the contract defines, in document order. */
  readonly commands: readonly string[];
  validate(schema: ContractSchemaName, value: unknown): Validation;
  /** Checks a request for `command` (envelope and arguments); undefined when the contract has no such command. */
  validateCommand(command: string, value: unknown): Validation | undefined;
  /**
   * Checks a reply: the CommandReply envelope, and for a command of the contract its result
   * schema (the `reply` channel's message of that name).
   */
  validateReply(value: unknown): Validation;
}

const SCHEMAS_REF = '#/components/schemas/';
const MESSAGES_REF = '#/components/messages/';
const DOC_ID = 'multihead-asyncapi';

/**
 * Loads the AsyncAPI document and compiles its schemas, so that the document and the code
 * cannot drift apart: what docs/asyncapi.yaml says a payload is, the device checks.
 */
export function contractLoad(path: string = CONTRACT_PATH): Contract {
  const doc = parse(readFileSync(path, 'utf8')) as AsyncApiDocument;
  const schemas = doc.components?.schemas;
  if (!schemas) throw new Error(`${path}: no components.schemas`);

  // strictRequired off: an allOf branch may require a property its sibling defines (standard JSON Schema).
  const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true });
  // Refs inside the document point at components.schemas; Ajv sees the same schemas as $defs
  // of one schema, so every ref resolves without Ajv having to understand AsyncAPI.
  ajv.addSchema({ $id: DOC_ID, $defs: refsRewrite(schemas, `#/$defs/`) });
  const compiled = new Map<string, ValidateFunction>();
  const named = (name: string): ValidateFunction => {
    let fn = compiled.get(name);
    if (!fn) {
      if (!(name in schemas)) throw new Error(`${path}: no schema components.schemas.${name}`);
      fn = ajv.compile({ $ref: `${DOC_ID}#/$defs/${name}` });
      compiled.set(name, fn);
    }
    return fn;
  };

  const compileMessages = (channel: 'command' | 'reply'): Map<string, ValidateFunction> => {
    const validators = new Map<string, ValidateFunction>();
    for (const [command, ref] of Object.entries(doc.channels?.[channel]?.messages ?? {})) {
      const target = ref.$ref?.startsWith(MESSAGES_REF) ? ref.$ref.slice(MESSAGES_REF.length) : undefined;
      const payload = target === undefined ? undefined : doc.components?.messages?.[target]?.payload;
      if (!payload) throw new Error(`${path}: ${channel} ${command} has no message payload`);
      validators.set(command, ajv.compile(refsRewrite(payload, `${DOC_ID}#/$defs/`) as object));
    }
    return validators;
  };
  const commandValidators = compileMessages('command');
  const replyValidators = compileMessages('reply');
  // Every command has a typed reply and every typed reply a command: the lists cannot drift apart.
  const unpaired = [
    ...[...commandValidators.keys()].filter((c) => !replyValidators.has(c)).map((c) => `${c} has no reply message`),
    ...[...replyValidators.keys()].filter((c) => !commandValidators.has(c)).map((c) => `reply ${c} has no command`),
  ];
  if (unpaired.length > 0)
    throw new Error(`${path}: channels.command and channels.reply differ: ${unpaired.join('; ')}`);

  const run = (fn: ValidateFunction, value: unknown): Validation =>
    fn(value) ? { ok: true } : { ok: false, problems: problemsOf(fn.errors ?? []) };

  return {
    commands: [...commandValidators.keys()],
    validate: (schema, value) => run(named(schema), value),
    validateCommand(command, value) {
      const fn = commandValidators.get(command);
      return fn ? run(fn, value) : undefined;
    },
    validateReply(value) {
      const command = (value as { command?: unknown } | null)?.command;
      const fn = typeof command === 'string' ? replyValidators.get(command) : undefined;
      return run(fn ?? named('CommandReply'), value);
    },
  };
}

/** One line naming every problem ("/args/limit must be <= 1000; ..."). */
export function problemsText(problems: readonly ValidationProblem[]): string {
  return problems.map((p) => `${p.path || 'payload'} ${p.message}`).join('; ');
}

function problemsOf(errors: readonly ErrorObject[]): ValidationProblem[] {
  const seen = new Set<string>();
  const out: ValidationProblem[] = [];
  for (const e of errors) {
    // allOf/oneOf repeat the same complaint per branch; one line per fact is enough.
    if (e.keyword === 'oneOf' || e.keyword === 'anyOf' || e.keyword === 'allOf') continue;
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') message = `has unknown field "${String(e.params.additionalProperty)}"`;
    if (e.keyword === 'enum') message = `must be one of ${(e.params.allowedValues as unknown[]).join(', ')}`;
    const line = `${e.instancePath}\u0000${message}`;
    if (seen.has(line)) continue;
    seen.add(line);
    out.push({ path: e.instancePath, message });
  }
  return out.length > 0 ? out : [{ path: '', message: 'is invalid' }];
}

function refsRewrite(node: unknown, base: string): unknown {
  if (Array.isArray(node)) return node.map((item) => refsRewrite(item, base));
  if (node === null || typeof node !== 'object') return node;
  return Object.fromEntries(
    Object.entries(node).map(([key, value]) => [
      key,
      key === '$ref' && typeof value === 'string' && value.startsWith(SCHEMAS_REF)
        ? base + value.slice(SCHEMAS_REF.length)
        : refsRewrite(value, base),
    ]),
  );
}

interface AsyncApiDocument {
  channels?: Record<'command' | 'reply', { messages?: Record<string, { $ref?: string }> } | undefined>;
  components?: {
    schemas?: Record<string, unknown>;
    messages?: Record<string, { payload?: unknown }>;
  };
}
