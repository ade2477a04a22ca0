/**
 * One session lease per process (per {@link EtcdLocks}): granted on first
 * use, kept alive every TTL/3, judged lost the moment it may have expired on
 * the server (no successful keep-alive sent within the TTL), or when etcd
 * says it is gone. Losing it compromises every lock held under it; the next
 * acquisition grants a fresh lease. The session's one deletion watch
 * (watch.ts) tells a held lock at once when someone else deletes its key,
 * and waiters when the keys they wait behind go; each keep-alive also
 * checks that our held keys still exist (in case the watch is down), and
 * retries deleting keys whose delete failed.
 * The protocol is described in docs/etcd-protocol.md.
 */
import { LockError } from '@x/core';
import { deleteOp, getOp, type DeleteEvent, type Gateway } from './gateway.js';
import { DeleteWatch } from './watch.js';

/** What the session tells a held lock or a waiter. */
export interface Member {
  /** The etcd key. */
  readonly key: string;
  /** The lease is gone (or the key deleted): never throws. */
  lost(error: LockError): void;
}

/** Hears the deletions of one name's keys (`undefined`: some may have been missed). */
export type Listener = (d: DeleteEvent | undefined) => void;

/** Keys checked per txn (etcd's default limit of operations per txn is 128). */
const BATCH = 128;

/** A granted lease and everything that depends on it. */
export class Lease {
  readonly id: bigint;
  /** The TTL the server granted, in seconds (etcd may raise a small one). */
  readonly ttl: number;
  #lost: LockError | undefined;
  readonly #gw: Gateway;
  readonly #path: string;
  readonly #members = new Map<string, Member>();
  readonly #orphans = new Set<string>();
  readonly #listeners = new Map<string, Set<Listener>>();
  readonly #watch: DeleteWatch;
  #keepTimer: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  readonly #onLost: (lease: Lease) => void;

  /**
   * @param grant - the lease's id and TTL, when its grant was sent
   * (`sentAt`), and the store's revision then (the watch starts after it)
   * @param prefix - the session's key prefix (watched, and the `path` of errors)
   */
  constructor(
    gw: Gateway,
    grant: { id: bigint; ttl: number; sentAt: number; revision: bigint },
    prefix: string,
    onLost: (lease: Lease) => void,
  ) {
    this.#gw = gw;
    this.id = grant.id;
    this.ttl = grant.ttl;
    this.#path = prefix;
    this.#onLost = onLost;
    this.#arm(grant.sentAt);
    this.#keepTimer = setInterval(() => void this.#keepAlive(), (grant.ttl * 1000) / 3);
    this.#keepTimer.unref();
    // A watch silent for a TTL (and twice a request's deadline) is reopened elsewhere: see docs/etcd-protocol.md.
    const idleMs = Math.max(grant.ttl * 1000, 2 * gw.requestTimeout);
    this.#watch = new DeleteWatch(gw, prefix, grant.revision + 1n, prefix, idleMs, {
      deleted: (d) => this.#deleted(d),
      gap: () => {
        void this.#checkHeld();
        for (const set of this.#listeners.values()) for (const l of [...set]) l(undefined);
      },
    });
  }

  /** A deletion seen by the watch: a held key someone else deleted is lost; waiters on its name hear of it. */
  #deleted(d: DeleteEvent): void {
    const member = this.#members.get(d.key);
    if (member) {
      this.#members.delete(d.key);
      member.lost(
        new LockError('ECOMPROMISED', d.key, `the key ${d.key} was deleted (by someone else, or with our expired lease)`),
      );
    }
    const set = this.#listeners.get(d.key.slice(0, d.key.lastIndexOf('/') + 1));
    if (set) for (const l of [...set]) l(d);
  }

  /**
   * Hears every deletion of a key starting with `base` (a lock name's keys)
   * from now on, or `undefined` when some may have been missed (re-read);
   * the process stays alive meanwhile. Returns the way to stop.
   */
  listen(base: string, listener: Listener): () => void {
    let set = this.#listeners.get(base);
    if (!set) this.#listeners.set(base, (set = new Set()));
    set.add(listener);
    this.#watch.ref(true);
    return () => {
      if (!set.delete(listener)) return;
      if (set.size === 0) this.#listeners.delete(base);
      this.#watch.ref(false);
    };
  }

  /** Why the lease is gone, or undefined while it lives. */
  get lost(): LockError | undefined {
    return this.#lost;
  }

  /** The expiry deadline: `sentAt` (when the last successful grant/keep-alive left) + TTL. */
  #arm(sentAt: number): void {
    if (this.#expiry) clearTimeout(this.#expiry);
    const left = sentAt + this.ttl * 1000 - performance.now();
    this.#expiry = setTimeout(
      () => this.lose(`no keep-alive of lease ${this.id.toString(16)} got through within its ${this.ttl} s TTL`),
      Math.max(0, left),
    );
    this.#expiry.unref();
  }

  async #keepAlive(): Promise<void> {
    if (this.#lost) return;
    const sentAt = performance.now();
    let ttl: number;
    try {
      ttl = await this.#gw.keepAlive(this.id, this.#path);
    } catch {
      return; // the expiry timer decides; a timer never throws
    }
    if (this.#lost) return;
    if (ttl <= 0) return this.lose(`etcd says lease ${this.id.toString(16)} has expired or was revoked`);
    this.#arm(sentAt);
    void this.#checkHeld();
    for (const key of this.#orphans) {
      this.#gw.txn([], [deleteOp(key)], [], this.#path).then(
        () => this.#orphans.delete(key),
        () => undefined,
      );
    }
  }

  /** A key under this lease whose delete failed or whose put may have been applied: deleted on the next keep-alive. */
  orphan(key: string): void {
    if (!this.#lost) this.#orphans.add(key);
  }

  /** Compromises every member with `reason`; revokes the lease in the background. Idempotent. */
  lose(reason: string, code: 'ECOMPROMISED' | 'ERELEASED' = 'ECOMPROMISED'): void {
    if (this.#lost) return;
    const error = new LockError(code, this.#path, reason);
    this.#lost = error;
    this.#stop();
    this.#onLost(this);
    // Gone on the server, or about to be: revoking makes it certain now.
    this.#gw.revoke(this.id, this.#path).catch(() => undefined);
    for (const member of [...this.#members.values()]) member.lost(error);
    this.#members.clear();
  }

  #stop(): void {
    clearInterval(this.#keepTimer);
    clearTimeout(this.#expiry);
    this.#watch.close();
    this.#orphans.clear();
  }

  /** Revokes the lease (close()): members are told with `ERELEASED`. */
  async revoke(): Promise<void> {
    if (this.#lost) return;
    this.#lost = new LockError('ERELEASED', this.#path, 'the etcd session was closed');
    this.#stop();
    this.#onLost(this);
    for (const member of [...this.#members.values()]) member.lost(this.#lost);
    this.#members.clear();
    await this.#gw.revoke(this.id, this.#path);
  }

  /** Registers a held key: told when the lease goes or someone deletes the key (seen by the watch, or at the next keep-alive). */
  hold(member: Member): void {
    if (this.#lost) return member.lost(this.#lost);
    this.#members.set(member.key, member);
  }

  /** Forgets a held key (released). */
  drop(key: string): void {
    this.#members.delete(key);
  }

  /** Whether each held key still exists; a missing one's holder is compromised. Never throws. */
  async #checkHeld(): Promise<void> {
    const held = [...this.#members.values()];
    for (let i = 0; i < held.length; i += BATCH) {
      const batch = held.slice(i, i + BATCH);
      let r;
      try {
        r = await this.#gw.txn(
          [],
          batch.map((m) => getOp(m.key)),
          [],
          this.#path,
        );
      } catch {
        return; // unreachable: the expiry timer decides
      }
      batch.forEach((m, j) => {
        if ((r.ranges[j]?.length ?? 0) > 0 || this.#members.get(m.key) !== m) return;
        this.#members.delete(m.key);
        m.lost(new LockError('ECOMPROMISED', m.key, `the key ${m.key} was deleted by someone else`));
      });
    }
  }
}
