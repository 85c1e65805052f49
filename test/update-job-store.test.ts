import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import test from 'ava';
import { remoteForbidden } from '../src/mqtt/desired-store.ts';
import { jobStorePath, jobStoreRead, jobStoreWrite } from '../src/update/job-store.ts';
import { scratchDir } from './helpers/tmp.ts';

const job = {
  jobId: 'firmware-1a2b3c4d',
  startedAt: '2025-01-01T10:00:00.000Z',
  target: '0.2.0',
  from: '0.1.0',
  bytesTotal: 1024,
  bootId: 'b1',
  reported: false,
};

test('job store: kept atomically under state/, read back; none is undefined; a torn file names itself', (t) => {
  const dataDir = scratchDir(t);
  t.is(jobStoreRead(dataDir), undefined);
  jobStoreWrite(dataDir, job);
  t.deepEqual(jobStoreRead(dataDir), job);
  jobStoreWrite(dataDir, { ...job, reported: true, outcome: 'succeeded' });
  t.like(jobStoreRead(dataDir), { reported: true, outcome: 'succeeded' });
  t.deepEqual(readdirSync(dirname(jobStorePath(dataDir))), ['update-job.json'], 'no temp file left');
  t.is(statSync(jobStorePath(dataDir)).mode & 0o777, 0o600);
  writeFileSync(jobStorePath(dataDir), '{"jobId": "firmware-');
  t.throws(() => jobStoreRead(dataDir), { message: /update-job\.json is not JSON/ });
  writeFileSync(jobStorePath(dataDir), '{"jobId": 7}');
  t.throws(() => jobStoreRead(dataDir), { message: /update-job\.json is not a stored update job/ });
});

test('update.keyring, the trust root of updates, cannot be set over MQTT', (t) => {
  t.deepEqual(
    remoteForbidden({ update: { keyring: '/var/lib/multihead/cache/evil.pgp', maxBytesPerSecond: 1000 } }).map(
      (f) => f.key,
    ),
    ['update.keyring'],
  );
  t.deepEqual(remoteForbidden({ update: { maxBytesPerSecond: 1000 } }), []);
});
