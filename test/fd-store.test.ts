// src/display/fd-store.ts: naming the card's descriptor in systemd's store and reading back
// what systemd passed (LISTEN_FDS). The store itself is exercised under real systemd by
// test/image (check d: kill -9, the heads keep their picture); the native FDSTORE send by
// `cargo test` (systemd::tests).
import test from 'ava';
import { fdStoreName, listenFds } from '../src/display/fd-store.ts';

test('fdStoreName: one name per card node, only characters systemd accepts', (t) => {
  t.is(fdStoreName('/dev/dri/card0'), 'kms-card0');
  t.is(fdStoreName('/dev/dri/by-path/pci-0000:00:02.0-card'), 'kms-pci-0000_00_02.0-card');
  t.false(fdStoreName('/dev/dri/by-path/pci-0000:00:02.0-card').includes(':'));
  t.true(fdStoreName(`/dev/${'x'.repeat(400)}`).length <= 255);
});

test('listenFds: names map to descriptors from 3 up, only for this process', (t) => {
  const env = { LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'kms-card0:kms-card1' };
  t.deepEqual(
    [...listenFds(env, 4242)],
    [
      ['kms-card0', 3],
      ['kms-card1', 4],
    ],
  );
  // Inherited from a parent: not ours.
  t.is(listenFds(env, 4243).size, 0);
  t.is(listenFds({}, 4242).size, 0);
});

test('listenFds: missing or bad counts and names are read safely', (t) => {
  t.is(listenFds({ LISTEN_PID: '7', LISTEN_FDS: 'x' }, 7).size, 0);
  t.is(listenFds({ LISTEN_PID: '7', LISTEN_FDS: '-1' }, 7).size, 0);
  t.is(listenFds({ LISTEN_PID: '7', LISTEN_FDS: '99999' }, 7).size, 0);
  t.deepEqual([...listenFds({ LISTEN_PID: '7', LISTEN_FDS: '1' }, 7)], [['unknown', 3]]);
  // A name given twice: the first descriptor wins.
  t.deepEqual([...listenFds({ LISTEN_PID: '7', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:a' }, 7)], [['a', 3]]);
});
