/**
 * Recovery: the streaming sweep that reclaims abandoned entries of a staging
 * root and never touches a live one. Protocol: docs/staging-protocol.md
 * ("Recovery").
 */
import { createLocked, isLockError, tryLock, type FileLock } from '@x/core';
import { EntryReclaimer, SWEEP_LANES, type ReclaimFailure, type ReclaimResult, type SweepStep } from '@x/core/sweep';
import { opendirSync, unlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  asError,
  checkObject,
  checkSignal,
  errnoOf,
  fenceOf,
  lstatQuiet,
  meetsMount,
  mountPoint,
  osError,
  removeTree,
  show,
  Slicer,
  type Fence,
} from './internal/fsutil.js';
import { probeLock } from './internal/probe.js';
import { classify, dirName, LOCK_PREFIX, type Layout } from './naming.js';
import {
  emptyReport,
  noteError,
  noteSkip,
  progressOf,
  type RecoverOptions,
  type RecoverProgress,
  type RecoverReport,
} from './report.js';

/** What the sweep did with one name. */
type Outcome =
  | { kind: 'skip' }
  | { kind: 'skipped'; path: string; reason: string }
  | { kind: 'live' }
  | { kind: 'removed'; bytes: number }
  | { kind: 'error'; path: string; error: Error };

const skip: Outcome = { kind: 'skip' };
const live: Outcome = { kind: 'live' };

/** Releases a sweep's lock; a failed release is the entry's error unless it already has one. */
async function releasing(lock: FileLock, outcome: Outcome, lockPath: string): Promise<Outcome> {
  try {
    await lock.release();
  } catch (err) {
    if (outcome.kind !== 'error') return { kind: 'error', path: lockPath, error: asError(err) };
  }
  return outcome;
}

export async function recoverArea(root: string, options?: RecoverOptions): Promise<RecoverReport> {
  const o = checkObject(options, ['dryRun', 'onProgress', 'signal']);
  const dryRun = o.dryRun ?? false;
  if (typeof dryRun !== 'boolean') throw new TypeError(`Expected \`dryRun\` to be a boolean, got ${show(dryRun)}`);
  const onProgress = o.onProgress;
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw new TypeError(`Expected \`onProgress\` to be a function, got ${show(onProgress)}`);
  }
  const signal = checkSignal(o.signal);
  signal?.throwIfAborted();

  const fence = fenceOf(root);
  const report = emptyReport();
  const progress = onProgress as ((p: RecoverProgress) => void) | undefined;
  const slicer = new Slicer();
  // A dry run takes no lock: it probes (JS). Without the native reclaim (an
  // older addon), the JS path does each step.
  const native = dryRun ? null : EntryReclaimer.open(root);
  try {
    const sweep: Sweep = { root, fence, dryRun, slicer, native };
    /** Counts one name's outcome; whether it was an entry. */
    const tally = (outcome: Outcome): boolean => {
      if (outcome.kind === 'skip') return false;
      if (outcome.kind === 'skipped') {
        noteSkip(report, { path: outcome.path, reason: outcome.reason });
        return false;
      }
      report.scanned++;
      if (outcome.kind === 'live') report.live++;
      else if (outcome.kind === 'removed') {
        report.removed++;
        report.bytesFreed += outcome.bytes;
      } else noteError(report, { path: outcome.path, error: outcome.error });
      return true;
    };
    /** One name the native loop left to us (or, without it, every name). */
    const one = async (name: string): Promise<void> => {
      let outcome: Outcome;
      try {
        outcome = await sweepName(sweep, name);
      } catch (err) {
        outcome = { kind: 'error', path: join(root, name), error: asError(err) };
      }
      if (tally(outcome)) progress?.(progressOf(report));
    };
    // The usual case (no mount point under the root): the native loop reads
    // the root and settles the common names; only the others reach JS.
    if (native && fence.mounts.size === 0 && (await sweepNative(native, report, slicer, one, signal, progress))) {
      signal?.throwIfAborted();
      return report;
    }
    // Read synchronously, in chunks of ROOT_CHUNK names, within the slices.
    const dir = opendirSync(root, { bufferSize: ROOT_CHUNK });
    try {
      for (let d = dir.readSync(); d !== null; d = dir.readSync()) {
        if (signal?.aborted) break;
        await one(d.name);
        if (slicer.due()) await slicer.yield();
      }
    } finally {
      dir.closeSync();
    }
  } finally {
    native?.close();
  }
  signal?.throwIfAborted();
  return report;
}

/**
 * The sweep's loop in native code ({@link EntryReclaimer}): no string or
 * object per entry in JS, so memory stays flat however many entries the
 * root has. Without `progress` the loop runs on {@link SWEEP_LANES} native
 * threads of its own that share the listing ({@link EntryReclaimer.run}, in
 * turns of {@link TURN_MS}: next to nothing allocated per entry or per
 * turn, and the event loop is never blocked; an abort stops it between two
 * entries); with it, in synchronous slices that stop after each entry, so that
 * `progress` is called after each. `one` handles the names the native loop
 * leaves to JS. False, having done nothing, when the addon has no native loop.
 */
async function sweepNative(
  native: EntryReclaimer,
  report: RecoverReport,
  slicer: Slicer,
  one: (name: string) => Promise<void>,
  signal: AbortSignal | undefined,
  progress: ((p: RecoverProgress) => void) | undefined,
): Promise<boolean> {
  if (progress) {
    for (;;) {
      if (signal?.aborted) return true;
      const s = native.step(slicer.remaining(), true);
      if (s === null) return false;
      if (tallyStep(s, report) === 'end') return true;
      if (s.stop === 'counted' || s.stop === 'error') progress(progressOf(report));
      else if (s.stop === 'name') await one(s.name);
      if (slicer.due()) await slicer.yield();
    }
  }
  const cancel = (): void => native.cancel();
  signal?.addEventListener('abort', cancel);
  // The names the lanes hand over are handled one at a time: the JS path's
  // native reclaim keeps one lock across its slices (EntryReclaimer.reclaim).
  let turn = Promise.resolve();
  const handle = (name: string): Promise<void> => (turn = turn.then(() => one(name)));
  const lane = async (k: number): Promise<boolean> => {
    for (;;) {
      if (signal?.aborted) return true;
      const s = await native.run(TURN_MS, k);
      if (s === null) return false;
      if (tallyStep(s, report) === 'end') return true;
      if (s.stop === 'name') await handle(s.name);
    }
  };
  try {
    // Every lane settles before the caller closes the root they read.
    const lanes = await Promise.allSettled(Array.from({ length: SWEEP_LANES }, (_, k) => lane(k)));
    for (const l of lanes) if (l.status === 'rejected') throw l.reason;
    return lanes.every((l) => l.status === 'fulfilled' && l.value);
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
}

/** Adds a native step's counts (and its failure) to the report; `end` when the step ends the lane. */
function tallyStep(s: SweepStep, report: RecoverReport): 'end' | 'more' {
  report.scanned += s.removed + s.live;
  report.removed += s.removed;
  report.live += s.live;
  report.bytesFreed += s.bytes;
  if (s.stop === 'error') {
    report.scanned++;
    noteError(report, { path: s.failure.entry, error: failureError(s.failure) });
  }
  return s.stop === 'end' || s.stop === 'cancelled' ? 'end' : 'more';
}

/** The outcome of a final native result. */
function settled(r: Exclude<ReclaimResult, 'again' | 'lease'>): Outcome {
  if (typeof r === 'number') return { kind: 'removed', bytes: r };
  if (r === 'live') return live;
  if (r === 'gone') return skip;
  return { kind: 'error', path: r.entry, error: failureError(r) };
}

/** The error of a failed native reclaim. */
function failureError(r: ReclaimFailure): Error {
  return r.mountPoint ? mountPoint(r.path) : osError(r.code, r.syscall, r.path, r.message);
}

/** One sweep's settings and state. */
interface Sweep {
  readonly root: string;
  readonly fence: Fence;
  readonly dryRun: boolean;
  readonly slicer: Slicer;
  readonly native: EntryReclaimer | null;
}

/**
 * Names read from the root at a time: the sweep's memory for the listing
 * (a few hundred KB at most), and few enough that a name read before its
 * entry was removed (by this sweep or its writer) is rare.
 */
const ROOT_CHUNK = 1024;

/**
 * How long a turn of the background loop lasts before it reports and goes
 * on in a new one (a new native thread, ~50 µs): long enough that the
 * turns cost nothing in time or memory, short enough that the report's
 * counts and an abort's promise settle soon.
 */
const TURN_MS = 200;

/** Both staging directories a lock file can guard (one of them, at most, exists). */
const layouts: readonly Layout[] = ['xstage', 'containers-storage'];

/** Handles one name of the root. Rejects only for unexpected errors (recorded by the caller). */
async function sweepName(sw: Sweep, name: string): Promise<Outcome> {
  const { root, fence, dryRun, slicer } = sw;
  const k = classify(name);
  if (k.kind === 'ignore') return skip;
  if (k.kind === 'unknown') {
    return {
      kind: 'skipped',
      path: join(root, name),
      reason: 'not a name of either staging layout (lock-<id> with <id>/ or temp-dir-<id>/)',
    };
  }
  if (k.kind === 'hidden') {
    // In-flight lock files (being published, probed or taken) are not
    // entries: a free one is deleted, and none is counted.
    if (!dryRun) await reclaimHidden(join(root, name));
    return skip;
  }
  const lockPath = join(root, LOCK_PREFIX + k.id);
  if (k.kind === 'dir') {
    const has = (n: string): boolean => (sw.native ? sw.native.has(n) : lstatQuiet(join(root, n)) !== undefined);
    // A directory with its lock file: the lock file's own entry decides. (One
    // without is checked again once its lock is held: it may have finished.)
    if (has(LOCK_PREFIX + k.id)) return skip;
    // Gone: removed with its lock file's entry earlier in this sweep (the
    // stream still returns names read before), or cleaned up by its writer.
    if (!has(name)) return skip;
  }
  if (k.kind === 'dir' && k.layout === 'containers-storage') {
    // containers/storage creates lock-<id> unlocked and locks it afterwards:
    // a sweeper in between deletes it, and the writer then locks the
    // unlinked file and creates temp-dir-<id> (podman#29641). A missing lock
    // file is no proof that the writer is gone.
    return {
      kind: 'skipped',
      path: join(root, name),
      reason: `no ${LOCK_PREFIX}${k.id}: containers/storage can leave a live entry without its lock file, so this is not proof it is abandoned`,
    };
  }
  // A lock file guards the directory of either layout.
  const names = k.kind === 'lock' ? layouts.map((l) => dirName(k.id, l)) : [k.id];
  const paths = names.map((n) => join(root, n));
  if (dryRun) return wouldReclaim(lockPath, paths, fence, slicer);
  if (k.kind === 'dir') return reclaimOrphan(root, lockPath, paths[0]!, fence, slicer);
  if (sw.native && !paths.some((p) => meetsMount(fence, p))) {
    const outcome = await reclaimNative(sw.native, LOCK_PREFIX + k.id, names, slicer);
    if (outcome !== 'lease') return outcome;
  }
  return reclaim(lockPath, paths, fence, slicer);
}

/**
 * `reclaim` in one native call per entry (more when a huge tree outlasts
 * the slice: the event loop runs in between, the lock stays held). A lock
 * file holding a lease record is left to the JS path, which judges it.
 */
async function reclaimNative(
  native: EntryReclaimer,
  lockName: string,
  names: readonly string[],
  slicer: Slicer,
): Promise<Outcome | 'lease'> {
  for (;;) {
    const r = native.reclaim(lockName, names, slicer.remaining());
    if (r === 'lease') return 'lease';
    if (r !== 'again') return settled(r);
    await slicer.yield();
  }
}

/** Removes every path (a missing one counts 0 bytes); returns the bytes freed. */
async function removeAll(paths: readonly string[], fence: Fence, slicer: Slicer, dryRun = false): Promise<number> {
  let bytes = 0;
  for (const p of paths) bytes += await removeTree(p, fence, slicer, dryRun);
  return bytes;
}

/**
 * Takes the existing lock file `lockPath` without ever creating a file at
 * that path (`create: false`): if its owner deletes it in that instant,
 * the open or the inode check fails with ENOENT and the sweep creates
 * nothing, so it never mistakes an entry that just finished for an
 * abandoned one (inode numbers are reused at once).
 *
 * @returns the held lock, `'live'` when it is held, `'gone'` when the
 * entry finished meanwhile (or was never there)
 */
async function take(lockPath: string): Promise<FileLock | 'live' | 'gone'> {
  try {
    return await tryLock(lockPath, { backend: 'kernel', create: false });
  } catch (err) {
    if (isLockError(err, 'ELOCKED')) return 'live';
    if (errnoOf(err) === 'ENOENT') return 'gone';
    throw err;
  }
}

/** Reclaims the entry of an existing lock file: `lock-<id>` free means its writer is gone. */
async function reclaim(lockPath: string, paths: readonly string[], fence: Fence, slicer: Slicer): Promise<Outcome> {
  let lock: FileLock | 'live' | 'gone';
  try {
    lock = await take(lockPath);
  } catch (err) {
    return { kind: 'error', path: lockPath, error: asError(err) };
  }
  if (lock === 'live') return live;
  if (lock === 'gone') return skip;
  let outcome: Outcome;
  let at = paths[0]!;
  try {
    let bytes = 0;
    for (const p of paths) bytes += await removeTree((at = p), fence, slicer);
    // We hold the inode, which was at `lockPath` when we locked it; only a
    // holder deletes a lock file, so the name is still ours.
    unlinkSync(lockPath);
    outcome = { kind: 'removed', bytes };
  } catch (err) {
    // The lock file stays (unlocked): the entry is still stale, a later sweep retries.
    outcome = { kind: 'error', path: at, error: asError(err) };
  }
  return releasing(lock, outcome, lockPath);
}

/**
 * Reclaims a directory that has no lock file: we publish one, locked,
 * so concurrent sweeps exclude each other. A live entry always has its
 * lock file (created before the directory, deleted after it is gone), so
 * this is garbage, unless the directory is gone by the time we hold it.
 */
async function reclaimOrphan(root: string, lockPath: string, path: string, fence: Fence, slicer: Slicer): Promise<Outcome> {
  let lock: FileLock;
  try {
    // Published already locked (never a create-then-lock gap in which
    // another sweep could take our new lock file for an abandoned entry).
    lock = await createLocked(root, () => basename(lockPath), { attempts: 1 });
  } catch (err) {
    // EEXIST: the lock file appeared meanwhile; its own entry decides.
    if (errnoOf(err) === 'EEXIST') return skip;
    return { kind: 'error', path: lockPath, error: asError(err) };
  }
  let outcome: Outcome;
  try {
    outcome = lstatQuiet(path) ? { kind: 'removed', bytes: await removeTree(path, fence, slicer) } : skip;
  } catch (err) {
    outcome = { kind: 'error', path, error: asError(err) };
  }
  return releasing(lock, outcome, lockPath);
}

/** Deletes a stray hidden lock file if nobody holds it. Errors are ignored: it is not an entry. */
async function reclaimHidden(path: string): Promise<void> {
  try {
    const lock = await tryLock(path, { backend: 'kernel', create: false, removeOnRelease: true });
    await lock.release();
  } catch {
    // held (being published or taken), or gone: not ours to report
  }
}

/** The dry-run version of `reclaim`: a probe that creates and deletes nothing. */
async function wouldReclaim(lockPath: string, paths: readonly string[], fence: Fence, slicer: Slicer): Promise<Outcome> {
  const probe = await probeLock(lockPath);
  if (probe.state === 'held') return live;
  if (probe.state === 'unknown')
    return { kind: 'error', path: lockPath, error: probe.error ?? new Error(`cannot tell whether '${lockPath}' is held`) };
  // free, or missing: an orphan directory (a live one always has its lock).
  if (probe.state === 'missing' && !paths.some((p) => lstatQuiet(p))) return skip;
  try {
    return { kind: 'removed', bytes: await removeAll(paths, fence, slicer, true) };
  } catch (err) {
    return { kind: 'error', path: paths[0]!, error: asError(err) };
  }
}
