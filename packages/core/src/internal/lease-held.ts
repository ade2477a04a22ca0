/**
 * A held lease (see lease.ts for the protocol): its heartbeat, loss
 * detection and release. "Ours" means the file at the path is the inode
 * open on our descriptor (same device and inode number: while we hold it
 * open, the number cannot be reused by another file).
 */
import { closeSync, fstatSync, futimesSync, linkSync, lstatSync, renameSync } from 'node:fs';
import { LockError } from '../errors.js';
import { hooks } from './hooks.js';
import { lstatOrNull } from './lease-claim.js';
import { leaseNative } from './lease-publish.js';
import { SideFiles, unlinkQuiet } from './lease-sides.js';
import { osError, withPath } from './oserror.js';

/** A held lease. */
export interface Lease {
  release(): Promise<void>;
}

const takenOver = (path: string): LockError =>
  new LockError('ECOMPROMISED', path, `the lease file '${path}' was deleted or taken over`);

/**
 * A lease this process holds: its descriptor, heartbeat and release (see
 * lease.ts for the protocol). Made by `acquireLease`.
 */
export class HeldLease implements Lease {
  readonly #path: string;
  readonly #fd: number;
  readonly #sides: SideFiles;
  readonly #lost: (error: LockError) => void;
  #id: { dev: number; ino: number } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #gone: LockError | undefined;

  constructor(path: string, fd: number, sides: SideFiles, beatMs: number, lost: (error: LockError) => void) {
    this.#path = path;
    this.#fd = fd;
    this.#sides = sides;
    this.#lost = lost;
    this.#timer = setInterval(() => this.#beat(), beatMs);
    this.#timer.unref();
  }

  /** Whether the file at the path is still the inode open on our descriptor. */
  #ours(): boolean {
    try {
      this.#id ??= fstatSync(this.#fd);
      const st = lstatSync(this.#path);
      return st.ino === this.#id.ino && st.dev === this.#id.dev;
    } catch {
      return false;
    }
  }

  #beat(): void {
    if (this.#gone) return;
    if (!this.#ours()) {
      this.#fail(`the lease file '${this.#path}' was deleted or taken over`);
      return;
    }
    try {
      const now = new Date();
      futimesSync(this.#fd, now, now);
    } catch (err) {
      this.#fail(`refreshing the lease on '${this.#path}' failed`, err);
    }
  }

  #fail(message: string, cause?: unknown): void {
    this.#gone = new LockError('ECOMPROMISED', this.#path, message, { cause });
    clearInterval(this.#timer);
    this.#lost(this.#gone);
  }

  /**
   * Only while the file at the path is still ours: move it aside (a side
   * file), confirm that what moved is ours, delete it. Never unlink by path
   * alone: between a check and an unlink, a taker may have put its own
   * lease there. A file moved aside that turns out not to be ours (a
   * takeover swapped files between the check and the rename) is put back.
   * One native call with the addon (native/lease.c), the same steps in JS
   * without it.
   */
  async release(): Promise<void> {
    clearInterval(this.#timer);
    let error: unknown = this.#gone;
    let closed = false;
    try {
      if (!error && leaseNative && !hooks.leaseStep) {
        closed = true; // in every case
        const r = leaseNative.leaseRelease(this.#fd, this.#path, this.#sides.path('released'));
        if (r === 1) error = takenOver(this.#path);
        else if (r === 2) error = new LockError('ECOMPROMISED', this.#path, `the lease on '${this.#path}' was taken over`);
        else if (r < 0) error = osError(r, 'rename', this.#path);
      } else if (!error) {
        error = this.#releaseSteps();
      }
    } catch (err) {
      error ??= withPath(err, this.#path);
    } finally {
      if (!closed) closeSync(this.#fd);
      this.#sides.close();
    }
    if (error) throw error;
  }

  /** The release's steps one by one (no addon; tests that stop between them). */
  #releaseSteps(): LockError | undefined {
    if (!this.#ours()) return takenOver(this.#path);
    const aside = this.#sides.path('released');
    try {
      renameSync(this.#path, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return takenOver(this.#path);
      throw err;
    }
    hooks.leaseStep?.('released', aside);
    // Gone already: a newcomer took the free lease and reclaimed it.
    const moved = lstatOrNull(aside);
    let error: LockError | undefined;
    if (moved !== null && (moved.ino !== this.#id!.ino || moved.dev !== this.#id!.dev)) {
      // A takeover swapped files between our check and the rename.
      try {
        linkSync(aside, this.#path);
      } catch {
        // a newcomer exists already
      }
      error = new LockError('ECOMPROMISED', this.#path, `the lease on '${this.#path}' was taken over`);
    }
    unlinkQuiet(aside);
    return error;
  }
}
