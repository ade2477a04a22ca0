/**
 * The native half of `@x/staging`'s recovery sweep: one call per staging
 * entry takes its lock file's lock, checks it, removes the entry's
 * directories and deletes the lock file (native/sweep.c describes the
 * steps; docs/staging-protocol.md, "Recovery", the protocol). For
 * `@x/staging` only: not part of the public API and not covered by semver.
 * @internal
 * @packageDocumentation
 */
import { closeSync, constants as fsc, fstatSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { getSystemErrorMap } from 'node:util';
import { osError } from './internal/oserror.js';
import { addon } from './platform/native.js';

/** Why an entry could not be reclaimed: an OS error of one of its paths. @internal */
export interface ReclaimFailure {
  /** The errno code (`EACCES`...); `EBUSY` for a mount point. */
  readonly code: string;
  /** The call that failed (`open`, `fcntl`, `lstat`, `unlink`, `rmdir`, `scandir`). */
  readonly syscall: string;
  /** The failing path (absolute). */
  readonly path: string;
  /** The path in the root it lies under: the entry's staging directory, or its lock file. */
  readonly entry: string;
  /** Node's text for the code (`permission denied`). */
  readonly message: string;
  /** The path is a directory of another filesystem: not entered. */
  readonly mountPoint: boolean;
}

/**
 * What {@link EntryReclaimer.reclaim} did: the bytes of regular files
 * deleted (the entry is gone, lock file included); `live` (its lock is
 * held); `gone` (the lock file vanished or was replaced meanwhile: the entry
 * finished); `lease` (a lease backend's record: the caller judges it);
 * `again` (the time budget ran out: the lock is still held; call again with
 * the same names after letting the event loop run); or a failure (the lock
 * file stays, unlocked).
 * @internal
 */
export type ReclaimResult = number | 'live' | 'gone' | 'lease' | 'again' | ReclaimFailure;

/**
 * Where {@link EntryReclaimer.step} or {@link EntryReclaimer.run} stopped:
 * `end` (the whole root is read), `slice` (its time is up), `counted` (one
 * entry counted, when asked to stop after each), `cancelled`
 * ({@link EntryReclaimer.cancel}), `name` (a name the caller must handle
 * itself: `name`), or `error` (lock file `name`'s reclaim failed:
 * `failure`). The counts are those of the call.
 * @internal
 */
export type SweepStep =
  | {
      readonly stop: 'end' | 'slice' | 'counted' | 'cancelled';
      readonly removed: number;
      readonly live: number;
      readonly bytes: number;
    }
  | {
      readonly stop: 'name';
      readonly removed: number;
      readonly live: number;
      readonly bytes: number;
      readonly name: string;
    }
  | {
      readonly stop: 'error';
      readonly removed: number;
      readonly live: number;
      readonly bytes: number;
      readonly name: string;
      readonly failure: ReclaimFailure;
    };

const codes = ['done', 'again', 'live', 'gone', 'lease', 'error'] as const;
const steps = ['end', 'slice', 'name', 'error', 'counted', 'read error', 'cancelled'] as const;
/** js_sweep's flags (native/sweep.c). */
const EACH = 1;
const BACKGROUND = 2;
/** Bytes of the root's listing read per system call (the sweep's only memory for it, per lane). */
const READ_BUF = 32 * 1024;

/**
 * How many {@link EntryReclaimer.run} lanes may sweep one root at once: two
 * threads keep the disk busy while one of them waits on it (an ext4 unlink
 * often blocks on the journal); they are two sweepers of the protocol,
 * which allows any number.
 * @internal
 */
export const SWEEP_LANES = 2;

/** A time budget in whole microseconds, as the addon takes it (an int32). */
const micros = (ms: number): number => Math.max(0, Math.min(2 ** 31 - 1, Math.round(ms * 1000)));

/** One reader of the root's listing: its read buffer and its native results. */
interface Lane {
  readonly out: Float64Array;
  readonly buf: Buffer;
  readonly errPath: Buffer;
}
const syscalls = ['open', 'fcntl', 'lstat', 'unlink', 'rmdir', 'scandir', 'rmdir'];
const MOUNT = 6;
const errors = getSystemErrorMap();

/**
 * Reclaims the entries of one staging root (held open as a directory
 * descriptor until {@link EntryReclaimer.close}). One per sweep.
 * @internal
 */
export class EntryReclaimer {
  readonly #root: string;
  readonly #fd: number;
  /** {@link EntryReclaimer.reclaim}'s results (native/sweep.c, js_reclaim). */
  readonly #out = new Float64Array(13);
  readonly #errPath = Buffer.alloc(4096);
  /** The readers of the listing ({@link EntryReclaimer.run}'s lanes; `step` uses the first). */
  readonly #lanes: Lane[] = [];
  /** The lock held across `again` results, and the bytes deleted so far. */
  #held = -1;
  #bytes = 0;
  /** {@link EntryReclaimer.cancel} was called: later lanes start cancelled. */
  #cancelled = false;

  private constructor(root: string, fd: number) {
    this.#root = root;
    this.#fd = fd;
  }

  /** Opens `root`; null when the loaded addon has no native reclaim (an older build). */
  static open(root: string): EntryReclaimer | null {
    if (typeof addon?.reclaim !== 'function' || typeof addon.lookup !== 'function') return null;
    const fd = openSync(root, fsc.O_RDONLY | fsc.O_DIRECTORY);
    const r = new EntryReclaimer(root, fd);
    try {
      r.#out[4] = fstatSync(fd).dev; // the device fence of every removal (lanes copy it)
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return r;
  }

  /**
   * Whether something (of any type, never followed) is at `name` in the root.
   * @throws OS errors other than ENOENT, with the path
   */
  has(name: string): boolean {
    const r = addon!.lookup!(this.#fd, name);
    if (r < 0) throw osError(r, 'lstat', join(this.#root, name));
    return r === 1;
  }

  /**
   * Reclaims the entry of lock file `lockName`, whose directories may be any
   * of `dirNames` (names in the root); works for about `budgetMs` at most
   * (see {@link ReclaimResult}: `again`).
   */
  reclaim(lockName: string, dirNames: readonly string[], budgetMs: number): ReclaimResult {
    const out = this.#out;
    const code = codes[addon!.reclaim!(this.#fd, lockName, dirNames, micros(budgetMs), this.#held, out, this.#errPath)];
    this.#held = -1;
    this.#bytes += out[0]!;
    if (code === 'again') {
      this.#held = out[1]!;
      return 'again';
    }
    const bytes = this.#bytes;
    this.#bytes = 0;
    if (code === 'done') return bytes;
    if (code !== 'error') return code!;
    return this.#failure(out, this.#errPath);
  }

  /**
   * Sweeps on through the root's listing for about `budgetMs`: reads it and
   * reclaims each `lock-<id>` natively, skips each `<id>` or
   * `temp-dir-<id>` whose lock file exists or that is gone, and stops at
   * any other name (see {@link SweepStep}; native/sweep.c, js_sweep). With
   * `each`, it stops after every entry counted. Only for a root without
   * mount points of the mount table under it. Null when the loaded addon
   * cannot (an older build).
   * @throws an OS error with the root's path when the root cannot be read
   */
  step(budgetMs: number, each: boolean): SweepStep | null {
    if (typeof addon?.sweep !== 'function') return null;
    const lane = this.#lane(0);
    const r = addon.sweep(this.#fd, micros(budgetMs), each ? EACH : 0, lane.buf, lane.out, lane.errPath);
    return this.#stepOf(r as number, lane);
  }

  /**
   * {@link EntryReclaimer.step} on a native thread of its own (not one of
   * libuv's pool, which the process's fs calls share): the event loop runs
   * meanwhile, and the sweep goes on until the end of the root, a name for
   * the caller, {@link EntryReclaimer.cancel}, or about `budgetMs` (`slice`,
   * between two entries; an entry is never cut short). Lanes `0` to {@link SWEEP_LANES}
   * `- 1` may run at once, each on its own thread: they share the root's
   * read position, so each name of the listing goes to one of them. Until a
   * lane's run settles, nothing but `has`, `reclaim` and the other lanes may
   * be called, and not `step`.
   * @throws an OS error with the root's path when the root cannot be read
   */
  async run(budgetMs: number, lane = 0): Promise<SweepStep | null> {
    if (typeof addon?.sweep !== 'function') return null;
    if (!Number.isInteger(lane) || lane < 0 || lane >= SWEEP_LANES) throw new RangeError(`no sweep lane ${lane}`);
    const l = this.#lane(lane);
    const r = await addon.sweep(this.#fd, micros(budgetMs), BACKGROUND, l.buf, l.out, l.errPath);
    return this.#stepOf(r, l);
  }

  /** Stops every {@link EntryReclaimer.run} between two entries (they settle as `cancelled`), and every later one. */
  cancel(): void {
    this.#cancelled = true;
    for (const l of this.#lanes) l.out[12] = 1;
  }

  #lane(k: number): Lane {
    let l = this.#lanes[k];
    if (!l) {
      l = { out: new Float64Array(13), buf: Buffer.allocUnsafe(READ_BUF), errPath: Buffer.alloc(4096) };
      l.out[4] = this.#out[4]!;
      l.out[12] = this.#cancelled ? 1 : 0;
      this.#lanes[k] = l;
    }
    return l;
  }

  #stepOf(r: number, lane: Lane): SweepStep {
    const out = lane.out;
    const stop = steps[r];
    const counts = { removed: out[9]!, live: out[10]!, bytes: out[11]! };
    if (stop === undefined || stop === 'read error') throw osError(-out[2]!, 'scandir', this.#root);
    if (stop !== 'name' && stop !== 'error') return { stop, ...counts };
    const name = lane.buf.toString('utf8', out[7]!, out[7]! + out[8]!);
    if (stop === 'error') return { stop, ...counts, name, failure: this.#failure(out, lane.errPath) };
    // A reclaim that ran out of time (`step` only): the lock stays held for
    // reclaim(name). Never touched otherwise: a lane's stop must not drop a
    // lock that `reclaim` holds across slices for another name.
    if (out[1]! >= 0) {
      this.#held = out[1]!;
      this.#bytes = out[0]!;
    }
    return { stop, ...counts, name };
  }

  /** The failure a native call left in `out` and `errPath`. */
  #failure(out: Float64Array, errPath: Buffer): ReclaimFailure {
    const errno = out[2]!;
    const rel = errPath.toString('utf8', 0, errPath.indexOf(0));
    const [code2, message] = errors.get(-errno) ?? [`E${errno}`, 'unknown error'];
    return {
      code: code2,
      syscall: syscalls[out[3]!] ?? 'unknown',
      path: rel ? join(this.#root, rel) : this.#root,
      entry: rel ? join(this.#root, rel.split('/')[0]!) : this.#root,
      message,
      mountPoint: out[3] === MOUNT,
    };
  }

  /** Closes the root (and a lock still held by an unfinished `again`). */
  close(): void {
    if (this.#held >= 0) addon!.close(this.#held);
    this.#held = -1;
    closeSync(this.#fd);
  }
}
