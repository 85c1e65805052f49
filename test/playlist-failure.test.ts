// A content item whose decoder fails while it is on screen (issue 12, point 1): its outputs keep
// the last frame for the hold, then the next playable item, or with none a slate naming the
// media and the code; never black. The runner against a fake Player that only keeps books.
import test from 'ava';
import type { MediaItem } from '../src/content/model.ts';
import type { Player, PlayerItem, PreparedItem } from '../src/content/player.ts';
import { PlaylistRunner, type RunnablePlaylist } from '../src/content/playlist-runner.ts';

class BookPlayer implements Player {
  readonly outputs = ['HDMI-A-1'];
  /** What the output shows: an item label, or `slate: <reason>`. */
  onScreen: string | undefined;
  readonly failures = new Map<string, { code: string; message: string }>();
  readonly history: string[] = [];
  #serial = 0;

  async prepare(item: PlayerItem): Promise<PreparedItem> {
    return { handle: `h${++this.#serial}:${item.label}`, item };
  }
  show(prepared: PreparedItem): void {
    this.onScreen = prepared.item.label;
    this.history.push(prepared.item.label);
  }
  discard(): void {}
  failure(prepared: PreparedItem): { code: string; message: string } | undefined {
    return this.failures.get(prepared.item.label);
  }
  loops(): number {
    return 0;
  }
  async slate(_outputs: readonly string[], reason: string, wanted: () => boolean = () => true): Promise<void> {
    if (!wanted()) return;
    this.onScreen = `slate: ${reason}`;
    this.history.push(this.onScreen);
  }
  close(): void {}
}

const media = (id: string): MediaItem => ({
  id,
  url: `https://cdn/${id}`,
  sha256: 'x'.repeat(64),
  size: 1,
  type: 'video',
});
const log = { info() {}, warn() {} };

async function until(probe: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function runner(player: BookPlayer, holdMs: number): PlaylistRunner {
  return new PlaylistRunner({
    player,
    targets: [{ output: 'HDMI-A-1' }],
    resolve: async (m) => `/cache/${m.id}`,
    log,
    failurePollMs: 10,
    failureHoldMs: holdMs,
  });
}

test('a failing item keeps its last frame for the hold, then the next item plays', async (t) => {
  const player = new BookPlayer();
  const r = runner(player, 300);
  t.teardown(() => r.stop());
  const playlist: RunnablePlaylist = {
    id: 'p',
    loop: true,
    items: [
      { media: media('a'), durationMs: 60_000 },
      { media: media('b'), durationMs: 60_000 },
    ],
  };
  await r.play(playlist);
  t.is(player.onScreen, 'a');
  player.failures.set('a', { code: 'ERR_DECODE_STALLED', message: 'no data' });
  const failedAt = Date.now();
  await until(() => player.onScreen === 'b', 'the next item');
  t.true(Date.now() - failedAt >= 290, `the last frame stayed ${Date.now() - failedAt} ms`);
  t.deepEqual(player.history, ['a', 'b']);
  t.like(r.state, { kind: 'playing', item: 'b' });
});

test('a failing single item gives way to a slate naming the media and the code, never black', async (t) => {
  const player = new BookPlayer();
  const r = runner(player, 50);
  t.teardown(() => r.stop());
  await r.play({ id: 'p', loop: true, items: [{ media: media('only') }] });
  t.is(player.onScreen, 'only');
  player.failures.set('only', { code: 'ERR_DECODE_READ', message: 'read failed' });
  await until(() => player.onScreen?.startsWith('slate') === true, 'the slate');
  t.is(player.onScreen, 'slate: only failed: ERR_DECODE_READ');
  t.like(r.state, { kind: 'slate', reason: 'only failed: ERR_DECODE_READ' });
});
