// multihead-provision: writes the first-boot provisioning file into built appliance images,
// without root: the ESP is found in the image's GPT and written with mtools (mcopy -i img@@offset).
//
//   multihead-provision check DEVICE.json...                    validate only
//   multihead-provision write IMAGE DEVICE.json [--output OUT]   into IMAGE (or a copy of it, OUT)
//   multihead-provision bulk IMAGE FLEET.csv --out-dir DIR      one image per CSV row: DIR/<id>.img
//
// Exit status: 0 done, 64 usage, 65 invalid input (every problem is listed, nothing written),
// 1 the image could not be written.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { espOffset } from './gpt.ts';
import {
  hostnameFor,
  PROVISION_FILE,
  ProvisionError,
  type ProvisionSpec,
  provisionRead,
  provisionValidate,
} from './spec.ts';

const USAGE = `usage:
  multihead-provision check DEVICE.json...
  multihead-provision write IMAGE DEVICE.json [--output OUT.img]
  multihead-provision bulk IMAGE FLEET.csv --out-dir DIR

DEVICE.json (see provision/README.md):
  {"device": {"name": "Lobby left", "id": "lobby-left", "groups": ["lobby"]},
   "timezone": "Europe/Berlin",
   "mqtt": {"url": "mqtts://broker:8883", "username": "...", "password": "...",
            "ca": "-----BEGIN CERTIFICATE-----...", "cert": "...", "key": "..."},
   "network": {"address": "192.168.1.50/24", "gateway": "192.168.1.1", "dns": ["192.168.1.1"]}}

FLEET.csv: a header row naming columns from
  name,id,groups,timezone,mqtt_url,mqtt_username,mqtt_password,mqtt_prefix,
  mqtt_ca,mqtt_cert,mqtt_key,address,gateway,dns,interface
  (groups and dns separated by ";"; mqtt_ca/cert/key are PEM file paths relative to the CSV)
`;

class UsageError extends Error {}

const CSV_COLUMNS = [
  'name',
  'id',
  'groups',
  'timezone',
  'mqtt_url',
  'mqtt_username',
  'mqtt_password',
  'mqtt_prefix',
  'mqtt_ca',
  'mqtt_cert',
  'mqtt_key',
  'address',
  'gateway',
  'dns',
  'interface',
] as const;

/** RFC 4180-ish: commas, double quotes ("" inside quotes), CRLF or LF. Returns rows with their line numbers. */
export function csvParse(text: string): Array<{ line: number; cells: string[] }> {
  const rows: Array<{ line: number; cells: string[] }> = [];
  let cells: string[] = [];
  let cell = '';
  let quoted = false;
  let line = 1;
  let rowLine = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else {
        if (c === '\n') line++;
        cell += c;
      }
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      cells.push(cell);
      cell = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      cells.push(cell);
      if (cells.some((x) => x.trim() !== '')) rows.push({ line: rowLine, cells });
      cells = [];
      cell = '';
      line++;
      rowLine = line;
    } else cell += c;
  }
  cells.push(cell);
  if (cells.some((x) => x.trim() !== '')) rows.push({ line: rowLine, cells });
  return rows;
}

/** One provisioning spec per CSV row; throws ProvisionError listing every bad row and cell. */
export function fleetRead(csvFile: string): Array<{ line: number; spec: ProvisionSpec; text: string }> {
  const dir = path.dirname(csvFile);
  const rows = csvParse(fs.readFileSync(csvFile, 'utf8'));
  const [header, ...body] = rows;
  if (!header) throw new ProvisionError(csvFile, ['empty: a header row and one row per device are needed']);
  const columns = header.cells.map((c) => c.trim());
  const problems: string[] = [];
  for (const c of columns) {
    if (!(CSV_COLUMNS as readonly string[]).includes(c))
      problems.push(`line ${header.line}: unknown column "${c}" (allowed: ${CSV_COLUMNS.join(', ')})`);
  }
  if (!columns.includes('name')) problems.push(`line ${header.line}: a "name" column is required`);
  if (body.length === 0) problems.push('no devices: only a header row');
  if (problems.length > 0) throw new ProvisionError(csvFile, problems);

  const out: Array<{ line: number; spec: ProvisionSpec; text: string }> = [];
  const names = new Map<string, number>();
  for (const row of body) {
    if (row.cells.length !== columns.length) {
      problems.push(`line ${row.line}: ${row.cells.length} cells, the header has ${columns.length}`);
      continue;
    }
    const get = (c: string): string | undefined => {
      const v = row.cells[columns.indexOf(c)]?.trim();
      return v === '' || v === undefined ? undefined : v;
    };
    const label = `line ${row.line}${get('name') ? ` (${get('name')})` : ''}`;
    const list = (v: string | undefined): string[] | undefined => v?.split(/[;\s]+/).filter((x) => x !== '');
    const pem = (column: string): string | undefined => {
      const file = get(column);
      if (file === undefined) return undefined;
      try {
        return fs.readFileSync(path.resolve(dir, file), 'utf8');
      } catch (e) {
        problems.push(
          `${label}: ${column}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        );
        return undefined;
      }
    };
    const spec: Record<string, unknown> = {
      device: prune({ name: get('name') ?? '', id: get('id'), groups: list(get('groups')) }),
    };
    if (get('timezone')) spec.timezone = get('timezone');
    const mqtt = prune({
      url: get('mqtt_url'),
      username: get('mqtt_username'),
      password: get('mqtt_password'),
      prefix: get('mqtt_prefix'),
      ca: pem('mqtt_ca'),
      cert: pem('mqtt_cert'),
      key: pem('mqtt_key'),
    });
    if (Object.keys(mqtt).length > 0) spec.mqtt = mqtt;
    const network = prune({
      address: get('address'),
      gateway: get('gateway'),
      dns: list(get('dns')),
      interface: get('interface'),
    });
    if (Object.keys(network).length > 0) spec.network = network;
    try {
      const valid = provisionValidate(spec, label);
      const file = fileNameFor(valid);
      const first = names.get(file);
      if (first !== undefined)
        problems.push(`${label}: same image name ${file}.img as line ${first} (give each device its own id)`);
      names.set(file, row.line);
      out.push({ line: row.line, spec: valid, text: `${JSON.stringify(valid, null, 2)}\n` });
    } catch (e) {
      if (!(e instanceof ProvisionError)) throw e;
      for (const p of e.problems) problems.push(`${label}: ${p}`);
    }
  }
  if (problems.length > 0) throw new ProvisionError(csvFile, problems);
  return out;
}

function prune(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

const fileNameFor = (spec: ProvisionSpec): string => spec.device.id ?? hostnameFor(spec.device.name);

/** Puts the provisioning text on the image's ESP with mtools; reads it back to be sure. */
export function imageWrite(image: string, text: string): void {
  const offset = espOffset(image);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'multihead-provision-'));
  const file = path.join(tmp, PROVISION_FILE);
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  const target = `${image}@@${offset}`;
  try {
    fs.writeFileSync(file, text, { mode: 0o600 });
    execFileSync('mcopy', ['-o', '-i', target, file, `::/${PROVISION_FILE}`], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const back = execFileSync('mtype', ['-i', target, `::/${PROVISION_FILE}`], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (back.toString('utf8') !== text) throw new Error(`${image}: read back a different ${PROVISION_FILE}`);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') throw new Error('mtools is needed (apt-get install mtools)');
    throw new Error(`${image}: writing the ESP failed: ${err.stderr?.toString().trim() || err.message}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** A sparse copy (reflink where the file system can). */
function imageCopy(from: string, to: string): void {
  fs.mkdirSync(path.dirname(path.resolve(to)), { recursive: true });
  execFileSync('cp', ['--sparse=always', '--reflink=auto', from, to]);
}

function main(argv: string[]): number {
  const { values, positionals } = (() => {
    try {
      return parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          output: { type: 'string', short: 'o' },
          'out-dir': { type: 'string' },
          help: { type: 'boolean', short: 'h' },
        },
      });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  })();
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [verb, ...args] = positionals;
  if (verb === 'check' && args.length > 0) {
    for (const file of args) {
      provisionRead(file);
      process.stdout.write(`${file}: ok\n`);
    }
    return 0;
  }
  if (verb === 'write' && args.length === 2) {
    const [image, input] = args as [string, string];
    const { text } = provisionRead(input);
    espOffset(image);
    const target = values.output ?? image;
    if (values.output) imageCopy(image, values.output);
    imageWrite(target, text);
    process.stdout.write(`${target}: ${PROVISION_FILE} written\n`);
    return 0;
  }
  if (verb === 'bulk' && args.length === 2 && values['out-dir']) {
    const [image, csv] = args as [string, string];
    const outDir = values['out-dir'];
    const fleet = fleetRead(csv);
    espOffset(image);
    fs.mkdirSync(outDir, { recursive: true });
    for (const { spec, text } of fleet) {
      const out = path.join(outDir, `${fileNameFor(spec)}.img`);
      imageCopy(image, out);
      imageWrite(out, text);
      process.stdout.write(`${out}: ${spec.device.name}\n`);
    }
    process.stdout.write(`${fleet.length} image(s) in ${outDir}\n`);
    return 0;
  }
  throw new UsageError(verb ? `unknown or incomplete command "${positionals.join(' ')}"` : 'no command');
}

if (import.meta.main) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`multihead-provision: ${e.message}\n\n${USAGE}`);
      process.exitCode = 64;
    } else if (e instanceof ProvisionError) {
      process.stderr.write(`multihead-provision: ${e.message}\n`);
      process.exitCode = 65;
    } else {
      process.stderr.write(`multihead-provision: ${(e as Error).message}\n`);
      process.exitCode = 1;
    }
  }
}
