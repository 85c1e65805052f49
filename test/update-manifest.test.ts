import test from 'ava';
import { UpdateError } from '../src/update/errors.ts';
import { artefactUrl, manifestParse } from '../src/update/manifest.ts';
import { versionCompare, versionValid } from '../src/update/version.ts';

const A = 'a'.repeat(64);
const B = 'B'.repeat(64);
const good = `${A}  multihead_0.2.0.root.squashfs\n${B} *multihead_0.2.0.efi\n`;

function refusal(t: import('ava').ExecutionContext, text: string, message: RegExp): void {
  const error = t.throws(() => manifestParse(text), { instanceOf: UpdateError });
  t.is(error?.code, 'ERR_UPDATE_MANIFEST');
  t.regex(error?.message ?? '', message);
}

test('manifest: the two artefacts of one version, text and binary sha256sum lines, digests lower-cased', (t) => {
  t.deepEqual(manifestParse(good), {
    version: '0.2.0',
    artefacts: [
      { name: 'multihead_0.2.0.root.squashfs', kind: 'root', sha256: A },
      { name: 'multihead_0.2.0.efi', kind: 'uki', sha256: B.toLowerCase() },
    ],
  });
  // Order does not matter; CRLF line ends (a file edited on another system) are read the same.
  t.is(manifestParse(`${B}  multihead_2026.12.1.efi\r\n${A}  multihead_2026.12.1.root.squashfs`).version, '2026.12.1');
});

test('manifest: a malformed line is refused naming its number and text', (t) => {
  refusal(
    t,
    `${A}  multihead_0.2.0.root.squashfs\n${A.slice(1)}  multihead_0.2.0.efi\n`,
    /line 2 ".*": not "<sha256 hex>/,
  );
  refusal(t, `${A} multihead_0.2.0.root.squashfs\n`, /line 1 /);
  refusal(t, `\n${good}`, /line 1 "": not/);
});

test('manifest: a file that is not one of the two artefacts is refused, even signed', (t) => {
  refusal(t, `${good}${A}  install.sh\n`, /line 3 .*"install.sh" is not an artefact of this firmware/);
  refusal(t, `${A}  ../multihead_0.2.0.efi\n`, /is not an artefact/);
  refusal(t, `${A}  multihead_0.2.0-rc1.efi\n`, /is not an artefact/);
});

test('manifest: two versions, a duplicate, a missing artefact or a bad version are refused', (t) => {
  refusal(t, `${A}  multihead_0.2.0.root.squashfs\n${B}  multihead_0.3.0.efi\n`, /line 2 .*version 0.3.0 beside 0.2.0/);
  refusal(t, `${good}${A}  multihead_0.2.0.efi\n`, /line 3 .*listed twice/);
  refusal(t, `${A}  multihead_0.2.0.root.squashfs\n`, /lacks the kernel image/);
  refusal(t, '', /lacks the root image .* and the kernel image/);
  refusal(t, `${A}  multihead_1..2.root.squashfs\n`, /version "1..2" is not dotted numbers/);
});

test('versions compare number by number', (t) => {
  t.true(versionCompare('0.10.0', '0.9.0') > 0);
  t.true(versionCompare('0.9.0', '0.10.0') < 0);
  t.is(versionCompare('1.0', '1.0.0'), 0);
  t.true(versionCompare('2026.12.1', '2026.2.30') > 0);
  t.true(versionValid('2026.12.1'));
  t.false(versionValid('1.2.3-beta'));
  t.false(versionValid(''));
});

test('artefact URLs keep a directory token and add the file name once', (t) => {
  t.is(artefactUrl('https://cdn.example/fw/0.2.0/', 'SHA256SUMS'), 'https://cdn.example/fw/0.2.0/SHA256SUMS');
  t.is(artefactUrl('https://cdn.example/fw/0.2.0', 'SHA256SUMS'), 'https://cdn.example/fw/0.2.0/SHA256SUMS');
  t.is(
    artefactUrl('https://cdn.example/fw/?token=abc#x', 'multihead_0.2.0.efi'),
    'https://cdn.example/fw/multihead_0.2.0.efi?token=abc',
  );
});
