/**
 * One session lease per process (per {@link EtcdLocks}): granted on first
 * use, kept alive every TTL/3, judged lost the moment it may have expired on
 * the server (no successful keep-alive sent within the TTL), or when etcd
 * says it is gone. Losing it compromises every lock held under it; the next
 * acquisition grants a fresh lease. Also watches for our held keys being
 * deleted by someone else, and retries deleting keys whose delete failed.
 * The protocol is described in docs/etcd-protocol.md.
 */
import { LockError } from '@x/core';
import { deleteOp, type Gateway } from './gateway.js';

/** What the session tells a held lock or a waiter. */
export interface Member {
  /** The etcd key. */
  readonly key: string;
  /** The lease is gone (or the key deleted): never throws. */
  lost(error: LockError): void;
}

const RECENT = 1024;

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
  /** Keys whose deletion the held-key watch saw recently (a delete can arrive before its key's handle registers). */
  readonly #recent = new Set<string>();
  #keepTimer: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #watch: AbortController | undefined;
  readonly #onLost: (lease: Lease) => void;

  constructor(gw: Gateway, id: bigint, ttl: number, grantedAt: number, path: string, onLost: (lease: Lease) => void) {
    this.#gw = gw;
    this.id = id;
    this.ttl = ttl;
    this.#path = path;
    this.#onLost = onLost;
    this.#arm(grantedAt);
    this.#keepTimer = setInterval(() => void this.#keepAlive(), (ttl * 1000) / 3);
    this.#keepTimer.unref();
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
    this.#watch?.abort();
    this.#watch = undefined;
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

  /**
   * Registers a held key created at `revision`: told when the lease goes or
   * someone deletes the key. Watches deletions under `prefix` while any key
   * is held.
   */
  hold(member: Member, revision: bigint, prefix: string): void {
    if (this.#lost) return member.lost(this.#lost);
    if (this.#recent.has(member.key)) {
      return member.lost(new LockError('ECOMPROMISED', this.#path, `the key ${member.key} was deleted by someone else`));
    }
    this.#members.set(member.key, member);
    if (!this.#watch) {
      this.#watch = new AbortController();
      void this.#watchHeld(prefix, revision + 1n, this.#watch.signal);
    }
  }

  /** Forgets a held key (released). Stops the watch when nothing is held. */
  drop(key: string): void {
    this.#members.delete(key);
    if (this.#members.size === 0 && this.#watch) {
      this.#watch.abort();
      this.#watch = undefined;
    }
  }

  async #watchHeld(prefix: string, start: bigint, signal: AbortSignal): Promise<void> {
    let next = start;
    while (!signal.aborted) {
      try {
        for await (const m of this.#gw.watchDeletes(prefix, next, this.#path, signal)) {
          if (m.canceled) {
            // Compacted past `next`: look at what exists now instead.
            const { revision, kvs } = await this.#gw.range(prefix, this.#path);
            const present = new Set(kvs.map((kv) => kv.key));
            for (const key of this.#members.keys()) if (!present.has(key)) this.#deleted(key);
            next = revision + 1n;
            break;
          }
          for (const d of m.deletes) {
            this.#deleted(d.key);
            next = d.revision + 1n;
          }
        }
      } catch {
        // The stream broke (a member went away): resume from where we were
        // on the next endpoint after a breath; lease expiry bounds all this.
        await new Promise((r) => setTimeout(r, 100).unref());
      }
    }
  }

  #deleted(key: string): void {
    this.#recent.add(key);
    if (this.#recent.size > RECENT) this.#recent.delete(this.#recent.values().next().value!);
    const member = this.#members.get(key);
    if (!member) return;
    this.#members.delete(key);
    member.lost(new LockError('ECOMPROMISED', this.#path, `the key ${key} was deleted by someone else`));
  }
}
