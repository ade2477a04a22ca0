/**
 * The side files of a lease file: the temporary file a lease is written into
 * before it is linked to its name (where it cannot be an unnamed `O_TMPFILE`
 * file, see lease-publish.ts), the takeover's claim (its taker's record,
 * under a name derived from the judged state), and the file moved aside by a
 * release or a takeover before it is deleted (never delete by path alone,
 * see lease.ts).
 *
 * Naming: `.<h>.<purpose>.<u>` in the lock file's directory, where `h` is 16
 * hex digits of the SHA-256 of the lock file's name and `u` 16 hex digits (a
 * claim: of the judged state, so that every taker of that state races for the
 * same name; otherwise the next number of this process's sequence, which
 * starts at a random 64-bit value, so two processes' names never meet in
 * practice, on one host or several). At most 43 bytes whatever the lock file is
 * called, so a side file fits whenever the lock file fits: its name is within
 * NAME_MAX, and where the directory is so long that the path would pass
 * PATH_MAX, it is reached through a descriptor of the directory
 * (`/proc/self/fd/<n>/<name>`). Hidden, and recognisable as belonging to one
 * lock file: `.<h>.` is its prefix.
 *
 * Crash leftovers: a process killed mid-create leaves `.<h>.create.<u>`
 * (only where a lease is published through a temporary file, see
 * lease-publish.ts);
 * one killed mid-release leaves `.<h>.released.<u>` (nothing at the lock
 * path); one killed mid-takeover leaves `.<h>.broken.<u>` and
 * `.<h>.claim.<u>`. A holder removes every side file of its lock file (see
 * {@link SideFiles.reclaim}): while it holds the lease, each is either such a
 * leftover or a file another process is still moving, whose step is moot
 * since someone else holds the lease; those steps treat a vanished side file
 * as "someone else got there first". The one leftover a holder cannot see is a
 * claim made just before a taker crashed with the stale file still in place:
 * the next taker judges it by the record it holds, its taker's, like a lease
 * (at once when that taker is provably dead, else once it stayed unchanged
 * for a lease length), removes it and takes over.
 */
import { closeSync, constants as fsc, lstatSync, openSync, readdirSync, readSync, unlinkSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { basename, dirname } from 'node:path';
import { parseRecord } from '../owner.js';

/** What a side file is for. */
export type SidePurpose = 'create' | 'claim' | 'released' | 'broken';

/** The longest path the kernel accepts, in bytes, without the NUL. */
const PATH_MAX = 4095;

const hex16 = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);

/** `.<h>.` per lock file name, computed once (a hash per lease would cost more than a metadata call). */
const prefixes = new Map<string, string>();
function prefixOf(name: string): string {
  let prefix = prefixes.get(name);
  if (prefix === undefined) {
    if (prefixes.size >= 1024) prefixes.clear();
    prefixes.set(name, (prefix = `.${hex16(name)}.`));
  }
  return prefix;
}

/** This process's sequence of unique parts: a random 64-bit start, counted up. */
const start = randomBytes(8);
let high = start.readUInt32BE(0);
let low = start.readUInt32BE(4);
const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

/** The next unique 16 hex digits of this process (see the module comment). */
export function nextUnique(): string {
  low = (low + 1) >>> 0;
  if (low === 0) high = (high + 1) >>> 0;
  return hex8(high) + hex8(low);
}

/** Deletes `path`; a file already gone is fine (a holder reclaimed it, see the module comment). */
export function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Paths of the side files of one lease file, and their reclaiming. */
export class SideFiles {
  /** The lock file's directory. */
  readonly dir: string;
  readonly #path: string;
  #prefix: string | undefined;
  #dirFd: number | undefined;

  constructor(path: string) {
    this.#path = path;
    this.dir = dirname(path);
  }

  get #prefixed(): string {
    return (this.#prefix ??= prefixOf(basename(this.#path)));
  }

  /** The path of a side file; `unique` defaults to this process's next one. */
  path(purpose: SidePurpose, unique = nextUnique()): string {
    return this.#at(`${this.#prefixed}${purpose}.${unique}`);
  }

  /** A name in the lock file's directory as a path that fits PATH_MAX. */
  #at(name: string): string {
    // `dir` is absolute and normalized (the lock path was resolved): no join needed.
    const plain = this.dir === '/' ? `/${name}` : `${this.dir}/${name}`;
    if (plain.length * 3 <= PATH_MAX || Buffer.byteLength(plain) <= PATH_MAX) return plain;
    this.#dirFd ??= openSync(this.dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
    return `/proc/self/fd/${this.#dirFd}/${name}`;
  }

  /** The claim's path for a judged state: the same for every taker that judged it. */
  claimPath(judged: { ino: number; mtimeMs: number }): string {
    return this.path('claim', hex16(`${judged.ino}-${Math.round(judged.mtimeMs * 1000)}`));
  }

  /**
   * Removes every side file of this lock file; call only while holding its
   * lease. Only regular files that are empty (a create killed before its
   * write) or hold a lease record (a side file is a lease file under another
   * name) are removed, so a stranger's file that happens to share the prefix
   * is left alone. Never throws: a side file
   * that cannot be removed stays for the next holder.
   */
  reclaim(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.startsWith(this.#prefixed)) continue;
      try {
        const p = this.#at(name);
        const st = lstatSync(p);
        if (!st.isFile() || (st.size > 0 && !isLeaseRecord(p))) continue;
        unlinkQuiet(p);
      } catch {
        // left for the next holder
      }
    }
  }

  /** Closes the directory descriptor, if one was opened. */
  close(): void {
    if (this.#dirFd !== undefined) closeSync(this.#dirFd);
    this.#dirFd = undefined;
  }
}

function isLeaseRecord(path: string): boolean {
  const fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    const buf = Buffer.allocUnsafe(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return parseRecord(buf.toString('utf8', 0, n))?.backend === 'lease';
  } finally {
    closeSync(fd);
  }
}
