import { constants } from 'node:os';

const names = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) names.set(value, name);

/** An error shaped like Node's own fs errors: `code`, `errno`, `syscall`, `path`. */
export interface OsError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path: string;
}

/** Builds the error for a `-errno` result of the addon. */
export function osError(negErrno: number, syscall: string, path: string): OsError {
  const errno = -negErrno;
  const code = names.get(errno) ?? `E${errno}`;
  const err = new Error(`${code}: ${syscall} failed on '${path}'`) as OsError;
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  err.path = path;
  return err;
}

/** errno values the hot path compares against. */
export const E = {
  EAGAIN: -constants.errno.EAGAIN,
  ENOENT: -constants.errno.ENOENT,
  EEXIST: -constants.errno.EEXIST,
  ECANCELED: -constants.errno.ECANCELED,
  ETIMEDOUT: -constants.errno.ETIMEDOUT,
  ESRCH: -constants.errno.ESRCH,
  EOPNOTSUPP: -constants.errno.EOPNOTSUPP,
} as const;

/**
 * Makes an OS error of a Node `fs` call name the path the caller acts on: a
 * call that names none (`write`, `fstat`, `futimes`...) or one of our hidden
 * side files (a lease's temporary file) gets `path`, in Node's message shape
 * (`ENOSPC: no space left on device, write '/x/a.lock'`). Every OS error we
 * surface carries the path the user gave. Returns `err` itself.
 */
export function withPath(err: unknown, path: string): unknown {
  const e = err as Partial<OsError> | null;
  if (!(err instanceof Error) || typeof e?.code !== 'string' || e.path === path) return err;
  const old = e.path;
  e.path = path;
  err.message =
    old !== undefined && err.message.includes(`'${old}'`)
      ? err.message.replace(`'${old}'`, `'${path}'`)
      : `${err.message} '${path}'`;
  return err;
}
