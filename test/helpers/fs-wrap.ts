import { type FileHandleLike, type FileSystem, nodeFs } from '../../src/content/fs.ts';

/**
 * The real file system, each opened handle with some of its calls replaced: a test's way to
 * watch or fail one call (a sync, a write on a full disk) while everything else is real.
 */
export function fsWithHandles(
  wrap: (handle: FileHandleLike, path: string) => Partial<FileHandleLike>,
  base: FileSystem = nodeFs,
): FileSystem {
  return {
    ...base,
    async open(path, flags, mode) {
      const handle = await base.open(path, flags, mode);
      return {
        write: handle.write.bind(handle),
        read: handle.read.bind(handle),
        sync: handle.sync.bind(handle),
        truncate: handle.truncate.bind(handle),
        stat: handle.stat.bind(handle),
        close: handle.close.bind(handle),
        ...wrap(handle, path),
      };
    },
  };
}
