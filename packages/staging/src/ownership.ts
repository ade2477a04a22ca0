/**
 * Entry ownership: who owns the entries of a staging area, and so what
 * `create()` claims, what `list()` reports and what `recover()` may reclaim.
 * Two providers: kernel-locked lock files in the root (the default, this
 * file) and locks in etcd shared by several hosts (`ownership-etcd.ts`).
 * See docs/staging-protocol.md ("Ownership").
 */
import { LockError } from '@x/core';
import { existsSync } from 'node:fs';
import { opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { createAndLock } from './lockfile.js';
import { lstatQuiet } from './internal/fsutil.js';
import { probeLock } from './internal/probe.js';
import { classify, dirName, LOCK_PREFIX, type Layout } from './naming.js';
import { type RecoverOptions, type RecoverReport } from './report.js';
import { recoverArea } from './sweep.js';
import type { StagingEntry } from './area.js';

/** An owned entry id: the entry exists (its directory may) while the claim is held. */
export interface Claim {
  /** The entry's id (its directory's name in the root). */
  readonly id: string;
  /** Where the ownership lives: the lock file's path, or the etcd key. */
  readonly path: string;
  /** Gives the ownership up for good (the lock file or key is deleted). */
  unlockAndDelete(): Promise<void>;
  /** Aborts when the ownership is lost (an etcd lease expired): a commit checks it last. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * The marker of a root whose entries are owned through a lock service
 * (etcd): local ownership refuses such a root, since it would take every
 * entry, having no lock file, for garbage.
 */
export const SERVICE_MARKER = '.xstage-locks-service';

/** How a staging area learns who owns its entries. */
export interface EntryOwnership {
  /** Checks at open() that `root` is owned this way; `fresh`: the root is new or empty (a marker may be left). */
  adopt(root: string, fresh: boolean): Promise<void>;
  /** Claims a fresh entry id, owned by us; the area then makes its directory. */
  claim(root: string): Promise<Claim>;
  /** Every entry of `root` with its owner; changes nothing. */
  list(root: string, signal: AbortSignal | undefined): AsyncGenerator<StagingEntry, void, undefined>;
  /** Reclaims the entries whose owner is gone. */
  recover(root: string, options?: RecoverOptions): Promise<RecoverReport>;
}

/** The default: an entry `<id>` is owned while `lock-<id>` is kernel-locked. */
export const localOwnership: EntryOwnership = {
  async adopt(root) {
    if (existsSync(join(root, SERVICE_MARKER))) {
      throw new LockError(
        'ENOTSUP',
        root,
        `the entries of '${root}' are owned through a lock service (etcd): open it with { locks }`,
      );
    }
  },

  async claim(root) {
    const lock = await createAndLock(root, LOCK_PREFIX);
    return { id: lock.name.slice(LOCK_PREFIX.length), path: lock.path, unlockAndDelete: () => lock.unlockAndDelete() };
  },

  async *list(root, signal) {
    const dir = await opendir(root, { bufferSize: 64 });
    for await (const d of dir) {
      signal?.throwIfAborted();
      const k = classify(d.name);
      if (k.kind !== 'lock' && k.kind !== 'dir') continue;
      const lockPath = join(root, LOCK_PREFIX + k.id);
      if (k.kind === 'dir') {
        const path = join(root, dirName(k.id, k.layout));
        if (!lstatQuiet(path)) continue;
        if (lstatQuiet(lockPath)) continue; // listed by its lock file
        yield { id: k.id, path, layout: k.layout, lockPath, hasDir: true, state: 'missing', owner: null };
        continue;
      }
      const probe = await probeLock(lockPath);
      if (probe.state === 'missing') continue;
      // The directory of either layout; ours when there is none.
      const cs = join(root, dirName(k.id, 'containers-storage'));
      const layout: Layout = !lstatQuiet(join(root, k.id)) && lstatQuiet(cs) ? 'containers-storage' : 'xstage';
      const path = join(root, dirName(k.id, layout));
      const hasDir = lstatQuiet(path) !== undefined;
      const entry: StagingEntry = { id: k.id, path, layout, lockPath, hasDir, state: probe.state, owner: probe.owner };
      if (probe.error) entry.error = probe.error;
      yield entry;
    }
  },

  recover: recoverArea,
};
