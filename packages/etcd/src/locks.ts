/**
 * Locks on etcd: the standard recipe (each contender puts a key under the
 * name's prefix, bound to its session lease; the key with the lowest create
 * revision holds the lock; the others wait, in create-revision order, for
 * every older key to go) driven by the session's one deletion watch, never
 * polling. The fencing token is the key's create revision. The handle is in
 * lock.ts, a waiter's bookkeeping in wait.ts, the lease in session.ts. See
 * docs/etcd-protocol.md.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { hostname } from 'node:os';
import { LockError, type LockOwner } from '@x/core';
import { createdAt, deleteOp, Gateway, putOp, rangeOp, type KeyValue } from './gateway.js';
import { EtcdLock, ownerOf, token, type Record } from './lock.js';
import {
  checkConnect,
  checkLock,
  checkName,
  show,
  type CheckedConnect,
  type CheckedLock,
  type EtcdLockOptions,
  type EtcdLocksOptions,
} from './options.js';
import { Lease, type Member } from './session.js';
import { abortable, ourKeyGone, Turn } from './wait.js';

/** How long a failed `lock()` waits for its key's delete before rejecting anyway (ms). */
const LEAVE_MS = 1000;

/** One name's state in etcd, as {@link EtcdLocks.list} reports it. */
export interface EtcdHolder {
  /** The lock's name. */
  name: string;
  /** The holder's key. */
  key: string;
  /** The holder (pid, hostname, `startedAt`). */
  owner: LockOwner;
  /** The holder's fencing token (its key's create revision). */
  fencingToken: bigint;
  /** How many contenders wait behind the holder. */
  waiting: number;
}

/** Names held by the `withLock` calls the current async context runs inside. */
const inside = new AsyncLocalStorage<ReadonlySet<string>>();

/**
 * A set of named locks in one etcd cluster under one key prefix, with one
 * session lease for this process, kept alive in the background.
 *
 * @remarks Everything this process holds goes when the lease does: at
 * {@link EtcdLocks.close}, or at most `ttl` seconds after the process dies
 * or is cut off. Waiting is first come, first served across every process
 * and host, and driven by etcd watches. Errors are @x/core's `LockError`
 * (`ELOCKED`, `ETIMEDOUT`, `ECOMPROMISED`, `ERELEASED`, and `EUNAVAILABLE`
 * when the cluster cannot be reached or has no quorum), with `path` set to
 * the etcd key or prefix.
 *
 * @example
 * ```ts
 * const locks = await EtcdLocks.connect({ endpoints: 'http://10.0.0.1:2379,http://10.0.0.2:2379', ttl: 10 });
 * try {
 *   await locks.withLock('gc', async (held) => collectGarbage({ signal: held.signal }));
 * } finally {
 *   await locks.close();
 * }
 * ```
 */
export class EtcdLocks {
  /** The key prefix of this set's locks (ends with `/`). */
  readonly prefix: string;
  /** The TTL asked for, in seconds. */
  readonly ttl: number;
  readonly #gw: Gateway;
  #lease: Lease | undefined;
  #granting: Promise<Lease> | undefined;
  #closed = false;
  #seq = 0;
  readonly #waiters = new Set<Member>();

  private constructor(o: CheckedConnect, gw: Gateway) {
    this.prefix = o.prefix;
    this.ttl = o.ttl;
    this.#gw = gw;
  }

  /**
   * Connects to a cluster and grants the session lease.
   * @param options - see {@link EtcdLocksOptions}
   * @throws `TypeError` for bad options; `LockError` `EUNAVAILABLE` when no endpoint answers.
   */
  static async connect(options: EtcdLocksOptions): Promise<EtcdLocks> {
    const o = checkConnect(options);
    const gw = new Gateway(o.endpoints, o.requestTimeout, o.tls);
    const locks = new EtcdLocks(o, gw);
    try {
      await locks.#session();
    } catch (err) {
      gw.close();
      throw err;
    }
    return locks;
  }

  /** The live lease, granting one when there is none (first use, or the last one was lost). */
  #session(): Promise<Lease> {
    if (this.#closed) return Promise.reject(new LockError('ERELEASED', this.prefix, 'this EtcdLocks was closed'));
    if (this.#lease && !this.#lease.lost) return Promise.resolve(this.#lease);
    this.#granting ??= (async () => {
      try {
        const sentAt = performance.now();
        const grant = await this.#gw.grant(this.ttl, this.prefix);
        const lease = new Lease(this.#gw, { ...grant, sentAt }, this.prefix, (l) => {
          if (this.#lease === l) this.#lease = undefined;
          for (const w of [...this.#waiters]) w.lost(l.lost!);
        });
        if (this.#closed) {
          await lease.revoke();
          throw new LockError('ERELEASED', this.prefix, 'this EtcdLocks was closed');
        }
        this.#lease = lease;
        return lease;
      } finally {
        this.#granting = undefined;
      }
    })();
    return this.#granting;
  }

  #record(): string {
    return JSON.stringify({ pid: process.pid, hostname: hostname(), since: Date.now() } satisfies Record);
  }

  /**
   * Takes the lock `name` if nobody holds it or waits for it; never waits.
   * One round trip; on `ELOCKED` nothing is left in etcd.
   * @param name - 1 to 255 characters, no `/` or control characters
   * @param options - `onCompromised`
   * @throws `LockError` `ELOCKED` (with `owner`), `EUNAVAILABLE`; `TypeError` for bad arguments.
   */
  async tryLock(name: string, options?: EtcdLockOptions): Promise<EtcdLock> {
    checkName(name);
    const o = checkLock(options);
    const base = `${this.prefix}${name}/`;
    if (inside.getStore()?.has(name))
      throw new LockError('ELOCKED', base, `'${name}' is already held by the enclosing withLock()`);
    const lease = await this.#session();
    const key = this.#key(base, lease);
    let r;
    try {
      r = await this.#gw.txn([createdAt(base, 0n, true)], [putOp(key, this.#record(), lease.id)], [rangeOp(base, 1)], key);
    } catch (err) {
      lease.orphan(key); // the put may have been applied
      throw err;
    }
    if (!r.succeeded) {
      const holder = r.ranges[0]?.[0];
      const owner = ownerOf(holder);
      const who = owner?.pid ? ` (pid ${owner.pid} on ${owner.hostname})` : '';
      throw new LockError('ELOCKED', base, `'${name}' is held${who}`, owner ? { owner } : {});
    }
    return this.#held(name, key, r.revision, lease, o);
  }

  #key(base: string, lease: Lease): string {
    return `${base}${lease.id.toString(16)}-${(++this.#seq).toString(16)}`;
  }

  #held(name: string, key: string, revision: bigint, lease: Lease, o: CheckedLock): EtcdLock {
    const handle = new EtcdLock(token, name, key, revision, lease, this.#gw, o);
    lease.hold(handle);
    return handle;
  }

  /**
   * Takes the lock `name`, waiting behind earlier contenders (first come,
   * first served) until each of them has gone. The wait is driven by an
   * etcd watch; `timeout`/`signal` bound it and remove our key on the way
   * out (the rejection waits up to 1 s for that delete; if etcd does not
   * answer, the key is deleted with a later keep-alive or goes with the lease).
   * @param name - 1 to 255 characters, no `/` or control characters
   * @param options - `timeout` (ms), `signal`, `onCompromised`
   * @throws `LockError` `ETIMEDOUT`, `ECOMPROMISED` (the lease was lost while
   * waiting), `EUNAVAILABLE`, `ELOCKED` (inside `withLock` of the same name);
   * the signal's reason; `TypeError` for bad arguments.
   */
  async lock(name: string, options?: EtcdLockOptions): Promise<EtcdLock> {
    checkName(name);
    const o = checkLock(options);
    const base = `${this.prefix}${name}/`;
    if (inside.getStore()?.has(name))
      throw new LockError('ELOCKED', base, `'${name}' is already held by the enclosing withLock()`);
    o.signal?.throwIfAborted();
    const stop = new AbortController();
    const onAbort = () => stop.abort(o.signal!.reason);
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const timer =
      o.timeout === Infinity
        ? undefined
        : setTimeout(
            () => stop.abort(new LockError('ETIMEDOUT', base, `gave up waiting for '${name}' after ${o.timeout} ms`)),
            o.timeout,
          );
    const waiter: Member = { key: base, lost: (err) => stop.abort(err) };
    this.#waiters.add(waiter);
    let lease: Lease | undefined;
    let key: string | undefined;
    let revision = 0n;
    let unlisten: (() => void) | undefined;
    try {
      lease = await abortable(this.#session(), stop.signal);
      if (lease.lost) throw lease.lost;
      const k = (key = this.#key(base, lease));
      const turn = new Turn(k);
      // Listen before the put: every deletion after it is heard, even one
      // that arrives before the put's answer (the turn keeps it until then).
      let synced = false;
      let gap = false;
      const resync = () => {
        const read = turn.unsync();
        this.#gw.range(base, k).then(
          (now) => turn.resync(read, now),
          (err: unknown) => turn.resync(read, err as Error),
        );
      };
      unlisten = lease.listen(base, (d) => {
        if (d) turn.deleted(d);
        else if (synced) resync();
        else gap = true;
      });
      let r;
      try {
        r = await this.#gw.txn([], [putOp(k, this.#record(), lease.id), rangeOp(base)], [], k, stop.signal);
      } catch (err) {
        lease.orphan(k); // the put may have been applied
        throw err;
      }
      revision = r.revision;
      turn.sync(r.ranges[1] ?? [], revision, revision);
      synced = true;
      if (gap) resync();
      await turn.wait(stop.signal);
      if (turn.gone) throw ourKeyGone(k); // deleted in the same txn as the last older key
      stop.signal.throwIfAborted();
      return this.#held(name, k, revision, lease, o);
    } catch (err) {
      if (key && revision > 0n && lease && !lease.lost) {
        // Leave the queue before rejecting: delete our key, only if it is
        // still ours. The rejection waits for that at most LEAVE_MS, so a
        // wait never outlives its timeout by more, even with etcd gone; a
        // delete that fails is retried with the next keep-alive.
        const leave = this.#gw.txn([createdAt(key, revision)], [deleteOp(key)], [], key).catch(() => lease!.orphan(key!));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([leave, new Promise((r) => (timer = setTimeout(r, LEAVE_MS)))]);
        clearTimeout(timer);
      }
      throw err;
    } finally {
      unlisten?.();
      this.#waiters.delete(waiter);
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Runs `fn` while holding `name` (waiting like {@link EtcdLocks.lock}) and
   * always releases it afterwards. Inside `fn`, locking the same name again
   * rejects `ELOCKED` rather than deadlock.
   * @param name - the lock's name
   * @param fn - the critical section; receives the held lock
   * @param options - see {@link EtcdLockOptions}
   * @returns what `fn` returns
   * @throws what {@link EtcdLocks.lock} throws, what `fn` throws, `TypeError` when `fn` is not a function.
   */
  async withLock<T>(name: string, fn: (held: EtcdLock) => T | PromiseLike<T>, options?: EtcdLockOptions): Promise<T> {
    if (typeof fn !== 'function') throw new TypeError(`Expected \`fn\` to be a function, got ${show(fn)}`);
    const held = await this.lock(name, options);
    const names = new Set(inside.getStore());
    names.add(name);
    try {
      return await inside.run(names, () => fn(held));
    } finally {
      await held.release();
    }
  }

  /**
   * Every lock of this set that is held, with its holder and how many wait.
   * @param namePrefix - only names starting with this
   * @throws `LockError` `EUNAVAILABLE`.
   */
  async list(namePrefix = ''): Promise<EtcdHolder[]> {
    if (typeof namePrefix !== 'string' || namePrefix.includes('/')) {
      throw new TypeError(`Expected \`namePrefix\` to be a string without "/", got ${show(namePrefix)}`);
    }
    const { kvs } = await this.#gw.range(this.prefix + namePrefix, this.prefix);
    const byName = new Map<string, KeyValue[]>();
    for (const kv of kvs) {
      const rest = kv.key.slice(this.prefix.length);
      const slash = rest.indexOf('/');
      if (slash <= 0) continue;
      const name = rest.slice(0, slash);
      let list = byName.get(name);
      if (!list) byName.set(name, (list = []));
      list.push(kv);
    }
    return [...byName].map(([name, list]) => ({
      name,
      key: list[0]!.key,
      owner: ownerOf(list[0])!,
      fencingToken: list[0]!.createRevision,
      waiting: list.length - 1,
    }));
  }

  /**
   * Revokes the session lease: every lock this process holds is released at
   * once (their signals abort `ERELEASED`), waits reject. Idempotent.
   * @throws `LockError` `EUNAVAILABLE` when etcd cannot be reached (the lease then expires after its TTL).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const lease = this.#lease ?? (await this.#granting?.catch(() => undefined));
    this.#lease = undefined;
    for (const w of [...this.#waiters]) w.lost(new LockError('ERELEASED', this.prefix, 'this EtcdLocks was closed'));
    try {
      await lease?.revoke();
    } finally {
      this.#gw.close();
    }
  }
}
