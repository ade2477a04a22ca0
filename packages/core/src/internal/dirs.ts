import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Creates `dir` and its missing parents, one level at a time, so that a
 * failure reports its real cause (`EROFS`, `ENOSPC`, `EACCES`...) with the
 * path of the level that failed; Node's recursive `mkdir` reports `ENOENT`
 * for all of them. An existing directory (or a concurrent creator's) is
 * fine; a file there is left to the caller's next call (`ENOTDIR`).
 * @returns whether `dir` itself was created by this call
 */
export function makeDirs(dir: string, mode?: number): boolean {
  try {
    mkdirSync(dir, { mode });
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err;
  }
  makeDirs(dirname(dir), mode);
  try {
    mkdirSync(dir, { mode });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return false;
  }
}
