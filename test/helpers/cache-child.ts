import { MediaCache } from '../../src/content/cache.ts';

/**
 * Run as a child process by the cache tests: downloads one item into a cache directory so
 * the test can kill -9 it mid-download. Arguments: <cache dir> <item JSON>.
 */
const [dir, itemJson] = process.argv.slice(2);
if (!dir || !itemJson) throw new Error('usage: cache-child.ts <dir> <item JSON>');
// The parent resumes in steps of this (a small file must still have whole steps to keep).
const cache = new MediaCache({ dir, maxBytes: 100_000_000, concurrency: 1, durableStep: 65_536 });
const item = JSON.parse(itemJson);
await cache.open(new Set([item.sha256]));
await cache.ensure([item]);
await cache.close();
