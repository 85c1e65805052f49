import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';
import test from 'ava';
import { CONTRACT_PATH } from '../src/mqtt/contract.ts';

// Spectral severities as the parser reports them: 0 error, 1 warning, 2 information, 3 hint.
const ERROR = 0;

async function diagnose(text: string) {
  const { document, diagnostics } = await new Parser().parse(text);
  return {
    document,
    errors: diagnostics
      .filter((d) => d.severity === ERROR)
      .map((d) => `${d.code} at ${d.path.join('.')}: ${d.message}`),
  };
}

test('the official AsyncAPI parser accepts docs/asyncapi.yaml with no errors', async (t) => {
  const { document, errors } = await diagnose(readFileSync(CONTRACT_PATH, 'utf8'));
  t.deepEqual(errors, []);
  t.truthy(document, 'the parser returned a document');
  const channels =
    document
      ?.channels()
      .all()
      .map((c) => c.id()) ?? [];
  t.true(channels.includes('command') && channels.includes('reply'), channels.join(', '));
});

test('the parse notices a broken document (the check is not a formality)', async (t) => {
  // messageExpiryInterval is an MQTT operation binding; on a message binding the parser refuses it.
  const broken = readFileSync(CONTRACT_PATH, 'utf8').replace(
    '    CommandReply:\n      name: reply\n',
    '    CommandReply:\n      name: reply\n      bindings:\n        mqtt:\n          bindingVersion: 0.2.0\n          messageExpiryInterval: 60\n',
  );
  const { errors } = await diagnose(broken);
  t.true(
    errors.some((e) => e.includes('messageExpiryInterval')),
    errors.join('\n'),
  );
});
