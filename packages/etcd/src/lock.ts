/**
 * The handle of a lock held in etcd ({@link EtcdLock}) and what its key's
 * value records. Created by `EtcdLocks` (locks.ts); see docs/etcd-protocol.md.
 */
import { LockError, type LockOwner } from '@x/core';
import { createdAt, deleteOp, type Gateway, type KeyValue } from './gateway.js';
import type { CheckedLock } from './options.js';
import type { Lease, Member } from './session.js';

/** @internal Only `EtcdLocks` creates handles. */
export const token = Symbol('EtcdLock');

/** What a key's value records: who created it and when. */
export interface Record {
  pid: number;
  hostname: string;
  since: number;
}

/** Parses a key's value into a {@link LockOwner} (`startedAt` = since). Tolerates junk. */
export function ownerOf(kv: KeyValue | undefined): LockOwner | undefined {
  if (!kv) return undefined;
  try {
    const r = JSON.parse(kv.value) as Partial<Record>;
    const owner: LockOwner = {};
    if (typeof r.pid === 'number') owner.pid = r.pid;
    if (typeof r.hostname === 'string') owner.hostname = r.hostname;
    if (typeof r.since === 'number') owner.startedAt = r.since;
    owner.held = true;
    return owner;
  } catch {
    return { held: true };
  }
}

/**
 * A lock held in etcd. Created by {@link EtcdLocks.tryLock},
 * {@link EtcdLocks.lock} and {@link EtcdLocks.withLock}.
 *
 * @remarks Same shape as @x/core's `FileLock`: `signal` aborts when the lock
 * is released (`ERELEASED`) or lost (`ECOMPROMISED`: the session lease
 * expired or was revoked, or someone deleted the key), `release()` is
 * idempotent, `await using` releases at scope end. `fencingToken` lets a
 * store reject writes of a holder that lost the lock without knowing it.
 *
 * @example
 * ```ts
 * await using held = await locks.lock('layers', { timeout: 10_000 });
 * await store.write(data, { fence: held.fencingToken, signal: held.signal });
 * ```
 */
export class EtcdLock implements Member {
  /** The lock's name. */
  readonly name: string;
  /** The etcd key this holder created (`<prefix><name>/<lease>-<n>`). */
  readonly key: string;
  /**
   * The key's create revision: strictly greater for every later holder of
   * any lock of the cluster, so a store that remembers the largest token it
   * has seen can refuse a write carrying a smaller one.
   */
  readonly fencingToken: bigint;
  readonly #lease: Lease;
  readonly #gw: Gateway;
  readonly #controller = new AbortController();
  readonly #onCompromised: ((error: LockError) => void) | undefined;
  #state: 'held' | 'lost' | 'released' = 'held';
  #releasing: Promise<void> | undefined;

  /** @internal Use the methods of {@link EtcdLocks}. */
  constructor(key: typeof token, name: string, etcdKey: string, revision: bigint, lease: Lease, gw: Gateway, o: CheckedLock) {
    if (key !== token) throw new TypeError('EtcdLock is created by EtcdLocks.tryLock(), lock() or withLock()');
    this.name = name;
    this.key = etcdKey;
    this.fencingToken = revision;
    this.#lease = lease;
    this.#gw = gw;
    this.#onCompromised = o.onCompromised;
  }

  /** An AbortSignal that aborts when the lock is released (`ERELEASED`) or lost (`ECOMPROMISED`). */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether this handle still holds the lock (false once released or lost). */
  get held(): boolean {
    return this.#state === 'held';
  }

  /**
   * Releases the lock: deletes our key, and only if it is still the key we
   * created (same create revision, in one txn), so a late release never
   * removes a successor's key. Idempotent.
   * @throws `LockError` `EUNAVAILABLE` when etcd cannot be reached; the
   * handle is released anyway and the key is deleted on a later keep-alive
   * or goes with the lease.
   */
  release(): Promise<void> {
    this.#releasing ??= this.#release();
    return this.#releasing;
  }

  async #release(): Promise<void> {
    const was = this.#state;
    this.#state = 'released';
    this.#lease.drop(this.key);
    if (!this.#controller.signal.aborted) {
      this.#controller.abort(new LockError('ERELEASED', this.key, `the lock '${this.name}' was released`));
    }
    try {
      await this.#gw.txn([createdAt(this.key, this.fencingToken)], [deleteOp(this.key)], [], this.key);
    } catch (err) {
      // A lost lock's key is gone or going with its lease: nothing to report.
      if (was === 'held') {
        this.#lease.orphan(this.key);
        throw err;
      }
    }
  }

  /** @internal The session reports a lost lease or a deleted key here; never throws. */
  lost(error: LockError): void {
    if (this.#state !== 'held') return;
    this.#state = 'lost';
    const mine = new LockError(error.code, this.key, `the lock '${this.name}': ${error.message}`, { cause: error });
    this.#controller.abort(mine);
    try {
      this.#onCompromised?.(mine);
    } catch (err) {
      process.emitWarning(`onCompromised threw: ${String(err)}`, 'LockWarning');
    }
  }

  /** Releases the lock; lets `await using held = await locks.lock(name)` work. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}
