import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Creates `dir` and its missing parents, one level at a time, so that a
 * failure reports its real cause (`EROFS`, `ENOSPC`, `EACCES`...) with the
 * path of the level that failed; Node's recursive `mkdir` reports `ENOENT`
 * for all of them. An existing directory (or a concurrent creator's) is fine.
 */
export function makeDirs(dir: string, mode?: number): void {
  try {
    mkdirSync(dir, { mode });
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return; // a file there: the caller's next call says ENOTDIR
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err;
  }
  makeDirs(dirname(dir), mode);
  try {
    mkdirSync(dir, { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}
