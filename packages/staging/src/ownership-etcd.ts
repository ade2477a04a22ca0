/**
 * Entry ownership in etcd, for a staging root shared by several hosts: an
 * entry `<id>` is owned while the lock named `<id>` exists in etcd under its
 * owner's session lease (an `EtcdLocks` of @x/etcd, one key prefix per
 * area). The order is the local one's: the claim first, then the directory;
 * the directory goes (commit, cleanup) before the claim. So a directory
 * whose lock is free belongs to a writer whose lease is gone, on whatever
 * host. `recover()` takes that lock itself before deleting, so two sweeps,
 * or a sweep and a creator drawing the same id, never collide. See
 * docs/staging-protocol.md ("Ownership").
 */
import { isLockError, LockError, type LockOwner } from '@x/core';
import { randomBytes } from 'node:crypto';
import { constants as fsc, existsSync } from 'node:fs';
import { open, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import type { StagingEntry } from './area.js';
import { asError, checkObject, checkSignal, fenceOf, lstatQuiet, removeTree, show, Slicer } from './internal/fsutil.js';
import { classify, LOCK_PREFIX } from './naming.js';
import { SERVICE_MARKER, type Claim, type EntryOwnership } from './ownership.js';
import { emptyReport, noteError, progressOf, type RecoverProgress } from './report.js';

/**
 * What a staging area needs of a lock service to keep entry ownership in it:
 * the shape of @x/etcd's `EtcdLocks` (this package does not depend on
 * @x/etcd; pass an `EtcdLocks`). Its key prefix must belong to this area alone.
 */
export interface EntryLockService {
  /** The key prefix of the service's locks. */
  readonly prefix: string;
  /** Takes a lock without waiting; rejects a `LockError` `ELOCKED` when it is held. */
  tryLock(name: string): Promise<{ readonly key: string; readonly signal: AbortSignal; release(): Promise<void> }>;
  /** Every held lock with its holder. */
  list(): Promise<readonly { readonly name: string; readonly key: string; readonly owner: LockOwner }[]>;
}

/** Whether `value` looks like an {@link EntryLockService}. */
export function isLockService(value: unknown): value is EntryLockService {
  const v = value as EntryLockService | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.prefix === 'string' &&
    typeof v.tryLock === 'function' &&
    typeof v.list === 'function'
  );
}

/** Entry directories of `root` (not the marker, not hidden names, not local lock files). */
async function* entryDirs(root: string, signal?: AbortSignal): AsyncGenerator<string> {
  for await (const d of await opendir(root, { bufferSize: 64 })) {
    signal?.throwIfAborted();
    const k = classify(d.name);
    // Only our layout: entries owned in etcd are always `<id>/`. One with a
    // local lock file beside it belongs to a process using local ownership on
    // this root: never ours to judge.
    if (k.kind !== 'dir' || k.layout !== 'xstage' || !lstatQuiet(join(root, d.name))?.isDirectory()) continue;
    if (!lstatQuiet(join(root, LOCK_PREFIX + d.name))) yield d.name;
  }
}

/** Ownership kept in `locks` (see the file comment). */
export function etcdOwnership(locks: EntryLockService): EntryOwnership {
  return {
    async adopt(root, fresh) {
      const marker = join(root, SERVICE_MARKER);
      if (existsSync(marker)) return;
      if (!fresh) {
        throw new LockError(
          'ENOTSUP',
          root,
          `'${root}' is a staging area with local lock files: it cannot be opened with { locks }`,
        );
      }
      await (await open(marker, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600)).close();
    },

    async claim(): Promise<Claim> {
      for (;;) {
        // The id format the naming rules accept (naming.ts): 64 bits, base 36, as local entries.
        const id = randomBytes(8).readBigUInt64LE().toString(36);
        try {
          const held = await locks.tryLock(id);
          return { id, path: held.key, signal: held.signal, unlockAndDelete: () => held.release() };
        } catch (err) {
          if (!isLockError(err, 'ELOCKED')) throw err; // an id drawn twice: draw again
        }
      }
    },

    async *list(root, signal) {
      const holders = new Map((await locks.list()).map((h) => [h.name, h]));
      for await (const id of entryDirs(root, signal)) {
        const h = holders.get(id);
        holders.delete(id);
        yield {
          id,
          path: join(root, id),
          layout: 'xstage',
          lockPath: h?.key ?? `${locks.prefix}${id}/`,
          hasDir: true,
          state: h ? 'held' : 'free',
          owner: h?.owner ?? null,
        } satisfies StagingEntry;
      }
      // Claimed entries whose directory is not there (yet, or any more).
      for (const [id, h] of holders) {
        yield { id, path: join(root, id), layout: 'xstage', lockPath: h.key, hasDir: false, state: 'held', owner: h.owner };
      }
    },

    async recover(root, options) {
      const o = checkObject(options, ['dryRun', 'onProgress', 'signal']);
      const dryRun = o.dryRun ?? false;
      if (typeof dryRun !== 'boolean') throw new TypeError(`Expected \`dryRun\` to be a boolean, got ${show(dryRun)}`);
      const onProgress = o.onProgress as ((p: RecoverProgress) => void) | undefined;
      if (onProgress !== undefined && typeof onProgress !== 'function') {
        throw new TypeError(`Expected \`onProgress\` to be a function, got ${show(onProgress)}`);
      }
      const signal = checkSignal(o.signal);
      signal?.throwIfAborted();
      const fence = fenceOf(root);
      const held = dryRun ? new Set((await locks.list()).map((h) => h.name)) : undefined;
      const report = emptyReport();
      const slicer = new Slicer();
      for await (const id of entryDirs(root)) {
        if (signal?.aborted) break;
        const path = join(root, id);
        try {
          if (held) {
            if (held.has(id)) report.live++;
            else {
              report.bytesFreed += await removeTree(path, fence, slicer, true);
              report.removed++;
            }
          } else {
            let lock;
            try {
              lock = await locks.tryLock(id);
            } catch (err) {
              if (!isLockError(err, 'ELOCKED')) throw err;
              report.live++;
            }
            if (lock) {
              try {
                // Gone meanwhile: its owner committed or cleaned up; not ours to count.
                if (!lstatQuiet(path)) continue;
                report.bytesFreed += await removeTree(path, fence, slicer);
                report.removed++;
              } finally {
                await lock.release();
              }
            }
          }
        } catch (err) {
          noteError(report, { path, error: asError(err) });
        }
        report.scanned++;
        onProgress?.(progressOf(report));
      }
      signal?.throwIfAborted();
      return report;
    },
  };
}
