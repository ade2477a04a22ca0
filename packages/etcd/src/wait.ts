/**
 * A waiter's place in the queue of one lock name: the keys created before
 * ours, crossed off as the session's watch reports their deletions, until
 * none is left (our turn) or our own key goes (compromised). Deletions that
 * arrive before our put's answer are kept and applied once we know which
 * keys are older. See docs/etcd-protocol.md ("Taking a lock").
 */
import { LockError } from '@x/core';
import type { DeleteEvent, KeyValue } from './gateway.js';

/** The error of a waiter whose own key was deleted. */
export function ourKeyGone(key: string): LockError {
  return new LockError('ECOMPROMISED', key, `our waiting key ${key} was deleted (lease expired or someone deleted it)`);
}

/** One waiter's turn (see the file comment). */
export class Turn {
  readonly #key: string;
  /** Our key's create revision (0 until the put's answer). */
  #revision = 0n;
  /** The older keys still there; undefined while we do not know them (before the put's answer, during a re-read). */
  #older: Set<string> | undefined;
  /** Deletions heard while `#older` is unknown. */
  #buffered: DeleteEvent[] = [];
  #outcome: { error?: Error } | undefined;
  #settle: ((outcome: { error?: Error }) => void) | undefined;
  /** How many re-reads were started (the number of the latest). */
  #reads = 0;

  constructor(key: string) {
    this.#key = key;
  }

  /** Whether our key was deleted: set even after our turn came (the holder must not start). */
  gone = false;

  /** A deletion under the name (from the session's watch). */
  deleted(d: DeleteEvent): void {
    if (d.key === this.#key) {
      this.gone = true;
      return this.#finish({ error: ourKeyGone(this.#key) });
    }
    if (!this.#older) return void this.#buffered.push(d);
    this.#older.delete(d.key);
    if (this.#older.size === 0) this.#finish({});
  }

  /**
   * What exists under the name at revision `at` (our put's txn, or a
   * re-read after a gap): the keys created before ours (`revision`) are the
   * ones to wait for; deletions heard meanwhile that are newer than `at` apply.
   */
  sync(kvs: KeyValue[], at: bigint, revision = this.#revision): void {
    this.#revision = revision;
    if (!kvs.some((kv) => kv.key === this.#key)) {
      this.gone = true;
      return this.#finish({ error: ourKeyGone(this.#key) });
    }
    const older = new Set(kvs.filter((kv) => kv.createRevision < revision).map((kv) => kv.key));
    for (const d of this.#buffered) if (d.revision > at) older.delete(d.key);
    this.#buffered = [];
    this.#older = older;
    if (older.size === 0) this.#finish({});
  }

  /**
   * Some deletions may have been missed: a re-read starts. What we hear is
   * held until the answer of the latest re-read ({@link resync}). Returns
   * this re-read's number.
   */
  unsync(): number {
    if (this.#revision > 0n) this.#older = undefined;
    return ++this.#reads;
  }

  /**
   * The answer of re-read `read` (what exists under the name at `at`, or
   * why the read failed). Only the latest re-read's answer applies: an
   * earlier one that lands after a later one started is stale (applying it
   * would bring back keys whose deletions were already heard, or end the
   * holding of deletions the later answer needs), so it is dropped.
   */
  resync(read: number, answer: { kvs: KeyValue[]; revision: bigint } | Error): void {
    if (read !== this.#reads) return;
    if (answer instanceof Error) this.fail(answer);
    else this.sync(answer.kvs, answer.revision);
  }

  /** The wait failed (a re-read failed, the session was lost). */
  fail(error: Error): void {
    this.#finish({ error });
  }

  #finish(outcome: { error?: Error }): void {
    if (this.#outcome) return;
    this.#outcome = outcome;
    this.#settle?.(outcome);
  }

  /** Resolves when our turn comes; rejects when our key goes, {@link fail} is called, or `signal` aborts. */
  wait(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => this.#finish({ error: signal.reason as Error });
      this.#settle = (o) => {
        signal.removeEventListener('abort', onAbort);
        if (o.error) reject(o.error);
        else resolve();
      };
      if (this.#outcome) return this.#settle(this.#outcome);
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/**
 * `promise`, or the reason of `signal` if it aborts first. (@x/core has the
 * same few lines in its internal wait helpers; @x/etcd uses only core's
 * public API, and a promise utility does not belong on a lock library's
 * public surface, so each package keeps its own.)
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}
