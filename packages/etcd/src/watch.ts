/**
 * One watch per session: every deletion under the session's key prefix,
 * from the revision its lease was granted at, on one long-lived stream that
 * resumes from the last revision seen when it breaks. The session hands
 * each deletion to whoever cares (a held lock whose key someone deleted, a
 * waiter whose older keys go), so no lock() sets up or tears down a stream
 * of its own. A stream that stays silent past a bound (a stopped member, a
 * cut-off host; etcd ends it itself when its member loses the leader) is
 * reopened on the next endpoint. See docs/etcd-protocol.md ("One watch per
 * session").
 */
import type { DeleteEvent, Gateway, WatchMessage, WatchStream } from './gateway.js';

/** Delays before reopening a broken stream (ms), growing to the last. */
const RETRY_MS = [20, 100, 250, 500, 1000];

/** What the watch reports. */
export interface WatchHandlers {
  /** A key under the prefix was deleted (in revision order, each once). */
  deleted(d: DeleteEvent): void;
  /** Deletions may have been missed (etcd compacted them away before we saw them): re-read what you track. */
  gap(): void;
}

/** The session's deletion watch (see the file comment). */
export class DeleteWatch {
  readonly #gw: Gateway;
  readonly #prefix: string;
  readonly #path: string;
  readonly #h: WatchHandlers;
  /** How long the stream may stay silent before it counts as broken (ms). */
  readonly #idleMs: number;
  /** The revision to (re)start from: one past the last deletion seen. */
  #next: bigint;
  #stream: WatchStream | undefined;
  #retry = 0;
  #timer: NodeJS.Timeout | undefined;
  #refs = 0;
  #closed = false;

  /** @param idleMs - how long the stream may stay silent (no event, no progress notification) before it is reopened */
  constructor(gw: Gateway, prefix: string, start: bigint, path: string, idleMs: number, handlers: WatchHandlers) {
    this.#gw = gw;
    this.#idleMs = idleMs;
    this.#prefix = prefix;
    this.#path = path;
    this.#h = handlers;
    this.#next = start;
    this.#open();
  }

  #open(): void {
    this.#timer = undefined;
    if (this.#closed) return;
    const stream = this.#gw.watch(
      this.#prefix,
      this.#next,
      this.#path,
      this.#idleMs,
      (m) => this.#message(m),
      () => this.#broken(),
    );
    stream.ref(this.#refs > 0);
    this.#stream = stream;
  }

  #message(m: WatchMessage): void {
    if (m.canceled) {
      this.#stream?.close();
      this.#stream = undefined;
      if (m.compactRevision !== undefined && m.compactRevision > this.#next) {
        // History before compactRevision is gone: resume there and let
        // everyone re-read the state the missed deletions changed.
        this.#next = m.compactRevision;
        this.#open();
        this.#h.gap();
      } else this.#broken();
      return;
    }
    this.#retry = 0;
    // A progress notification: every deletion up to its revision has
    // reached us, so a reopen can start after it.
    if (m.progress && m.revision >= this.#next) this.#next = m.revision + 1n;
    for (const d of m.deletes) {
      this.#next = d.revision + 1n;
      this.#h.deleted(d);
    }
  }

  #broken(): void {
    this.#stream = undefined;
    if (this.#closed || this.#timer) return;
    const delay = RETRY_MS[Math.min(this.#retry++, RETRY_MS.length - 1)]!;
    this.#timer = setTimeout(() => this.#open(), delay);
    if (this.#refs === 0) this.#timer.unref();
  }

  /**
   * Someone waits on the watch (`true`) or stops waiting (`false`): while
   * anyone does, the stream keeps the process alive; otherwise it does not.
   */
  ref(on: boolean): void {
    this.#refs += on ? 1 : -1;
    if (this.#refs === (on ? 1 : 0)) {
      this.#stream?.ref(on);
      if (on) this.#timer?.ref();
      else this.#timer?.unref();
    }
  }

  /** Ends the watch for good. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#stream?.close();
    this.#stream = undefined;
  }
}
