import { type Content, type MediaItem, mediaById } from './model.ts';
import type { RunnablePlaylist } from './playlist-runner.ts';
import type { ScheduleResult } from './scheduler.ts';

/** The playlist `id` of `content` with its media looked up; items whose media is missing are left out. */
export function runnablePlaylist(content: Content, id: string): RunnablePlaylist | undefined {
  const playlist = content.playlists.find((p) => p.id === id);
  if (!playlist) return undefined;
  const media = mediaById(content);
  return {
    id: playlist.id,
    loop: playlist.loop ?? true,
    items: playlist.items.flatMap((item) => {
      const m = media.get(item.media);
      return m ? [{ media: m, ...(item.duration !== undefined ? { durationMs: item.duration * 1000 } : {}) }] : [];
    }),
  };
}

/** Media of the playlists placed now and next: fetched first, never evicted. */
export function scheduledMedia(content: Content, result: ScheduleResult): MediaItem[] {
  const media = mediaById(content);
  const ids = new Set<string>();
  for (const placements of [result.perOutput, result.next ?? {}]) {
    for (const p of Object.values(placements)) {
      const playlist = content.playlists.find((x) => x.id === p.playlist);
      for (const item of playlist?.items ?? []) ids.add(item.media);
    }
  }
  return [...ids].flatMap((id) => media.get(id) ?? []);
}
