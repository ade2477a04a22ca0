/**
 * A minimal client of etcd v3's gRPC-JSON gateway (`POST /v3/...` on every
 * client URL, since etcd 3.4), through `node:http`/`node:https` with one
 * keep-alive agent per cluster: no gRPC stack. int64 fields (revisions,
 * lease ids) travel as decimal strings, keys and values as base64. Why not
 * the `etcd3` package, and why not `fetch`: see this package's README.
 */
import http from 'node:http';
import https from 'node:https';
import { LockError } from '@x/core';
import type { TlsOptions } from './options.js';

/** A key-value pair as the gateway returns it (keys and values already decoded). */
export interface KeyValue {
  key: string;
  value: string;
  createRevision: bigint;
  modRevision: bigint;
  lease: bigint;
}

/** One DELETE event of a watch (we only watch deletions). */
export interface DeleteEvent {
  key: string;
  revision: bigint;
}

/** One message of a watch stream. */
export interface WatchMessage {
  /** The store's revision when the message was sent. */
  revision: bigint;
  created: boolean;
  /** Set when etcd cancelled the watch: the start revision was compacted away. */
  compactRevision?: bigint;
  canceled: boolean;
  /** A progress notification: no event, and every event up to `revision` has been sent. */
  progress: boolean;
  deletes: DeleteEvent[];
}

type Json = Record<string, unknown>;

/** Idle time before the kernel probes a watch's connection (ms). */
const KEEPALIVE_MS = 1000;

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: unknown): string => (typeof s === 'string' ? Buffer.from(s, 'base64').toString('utf8') : '');
const big = (s: unknown): bigint => (typeof s === 'string' || typeof s === 'number' ? BigInt(s) : 0n);

/** The end of the key range of every key starting with `prefix` (etcd's "prefix" range end). */
export function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, 'utf8');
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      bytes[i]! += 1;
      return bytes.subarray(0, i + 1).toString('latin1');
    }
  }
  return '\0';
}

/** Base64 of a range end built by {@link prefixEnd} (it may not be valid UTF-8, so no text round trip). */
function rangeEnd64(prefix: string): string {
  return Buffer.from(prefixEnd(prefix), 'latin1').toString('base64');
}

function decodeKv(kv: Json): KeyValue {
  return {
    key: unb64(kv.key),
    value: unb64(kv.value),
    createRevision: big(kv.create_revision),
    modRevision: big(kv.mod_revision),
    lease: big(kv.lease),
  };
}

/** Whether a failed request certainly never reached the server (so it was not applied). */
function notSent(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND' || code === 'EADDRNOTAVAIL';
}

/** A put of `key` (bound to `lease`) in a txn. */
export const putOp = (key: string, value: string, lease: bigint): Json => ({
  request_put: { key: b64(key), value: b64(value), lease: lease.toString() },
});
/** A range over every key starting with `prefix`, oldest first, in a txn. */
export const rangeOp = (prefix: string, limit = 0): Json => ({
  request_range: {
    key: b64(prefix),
    range_end: rangeEnd64(prefix),
    sort_order: 'ASCEND',
    sort_target: 'CREATE',
    limit: String(limit),
  },
});
/** A read of exactly `key` in a txn (its kvs are empty when it does not exist). */
export const getOp = (key: string): Json => ({ request_range: { key: b64(key), keys_only: true } });
/** A delete of exactly `key` in a txn. */
export const deleteOp = (key: string): Json => ({ request_delete_range: { key: b64(key) } });
/** Compares `key`'s create revision (0: the key does not exist); with `range`, of every key starting with it. */
export const createdAt = (key: string, revision: bigint, range = false): Json => ({
  target: 'CREATE',
  result: 'EQUAL',
  key: b64(key),
  ...(range ? { range_end: rangeEnd64(key) } : {}),
  create_revision: revision.toString(),
});

/** The result of a txn: whether the compares held, the revision, and the responses decoded. */
export interface TxnResult {
  succeeded: boolean;
  revision: bigint;
  /** The kvs of each range response, in op order (empty arrays for puts/deletes). */
  ranges: KeyValue[][];
}

/** One open watch stream (see {@link Gateway.watch}). */
export interface WatchStream {
  /** Ends the stream (no further callbacks). */
  close(): void;
  /** Whether the stream's connection keeps the process alive (while someone waits on it). */
  ref(on: boolean): void;
}

/** Talks to one cluster through its endpoints, failing over on connection errors. */
export class Gateway {
  readonly #endpoints: URL[];
  readonly #timeout: number;
  readonly #agent: http.Agent;
  readonly #request: typeof http.request;
  #current = 0;
  /** The prefix of error messages: names the cluster. */
  readonly where: string;

  /** Every request's deadline (ms). */
  get requestTimeout(): number {
    return this.#timeout;
  }

  constructor(endpoints: string[], requestTimeout: number, tls?: TlsOptions) {
    this.#endpoints = endpoints.map((e) => new URL(e));
    this.#timeout = requestTimeout;
    this.where = endpoints.join(',');
    // One keep-alive agent: every request reuses an idle connection (a new
    // TCP connection per request would cost more than etcd's own work); idle
    // sockets do not keep the process alive. Endpoints are all http: or all https:.
    const secure = this.#endpoints[0]!.protocol === 'https:';
    this.#agent = secure ? new https.Agent({ keepAlive: true, ...tls }) : new http.Agent({ keepAlive: true });
    this.#request = secure ? https.request : http.request;
  }

  /** Closes every idle connection (the session is over). */
  close(): void {
    this.#agent.destroy();
  }

  /** An EUNAVAILABLE error about `what`. */
  unavailable(path: string, what: string, cause?: unknown): LockError {
    const detail = cause instanceof Error ? `: ${cause.message}${causeCode(cause)}` : '';
    return new LockError('EUNAVAILABLE', path, `etcd at ${this.where} did not answer ${what}${detail}`, { cause });
  }

  /**
   * Sends `body` to endpoint `index`; the request goes out in one write
   * (headers and body).
   */
  #send(index: number, method: string, body: string, headers?: http.OutgoingHttpHeaders): http.ClientRequest {
    const url = this.#endpoints[index]!;
    const req = this.#request({
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port,
      path: `${url.pathname.replace(/\/$/, '')}/v3/${method}`,
      method: 'POST',
      agent: this.#agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers },
    });
    req.end(body);
    return req;
  }

  /** One request to endpoint `index`: its status and parsed JSON answer, within the request timeout. */
  #once(index: number, method: string, body: string, signal?: AbortSignal): Promise<{ ok: boolean; json: Json }> {
    return new Promise((resolve, reject) => {
      const req = this.#send(index, method, body);
      const fail = (err: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        req.destroy();
        reject(err as Error);
      };
      const onAbort = () => fail(signal!.reason);
      const timer = setTimeout(
        () => fail(Object.assign(new Error(`no answer within ${this.#timeout} ms`), { code: 'ETIMEDOUT' })),
        this.#timeout,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      req.once('error', fail);
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('error', fail);
        res.once('end', () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          try {
            resolve({ ok: (res.statusCode ?? 0) < 300, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Json });
          } catch (err) {
            reject(err as Error);
          }
        });
      });
    });
  }

  /**
   * POSTs `body` to `/v3/<method>` and returns the JSON answer. A refused
   * connection moves on to the next endpoint (the request never arrived); a
   * timeout or an error answer does not (a write may have been applied), it
   * rejects EUNAVAILABLE. `retry` requests are safe to repeat anywhere.
   */
  async call(method: string, body: Json, path: string, options: { signal?: AbortSignal; retry?: boolean } = {}): Promise<Json> {
    options.signal?.throwIfAborted();
    const data = JSON.stringify(body);
    let last: unknown;
    for (let i = 0; i < this.#endpoints.length; i++) {
      const index = (this.#current + i) % this.#endpoints.length;
      let answer;
      try {
        answer = await this.#once(index, method, data, options.signal);
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason;
        last = err;
        if (notSent(err) || options.retry) continue;
        throw this.unavailable(path, method, err);
      }
      if (answer.ok) {
        this.#current = index;
        return answer.json;
      }
      last = new Error(String(answer.json.message ?? answer.json.error ?? 'an error answer'));
      if (!options.retry) throw this.unavailable(path, method, last);
    }
    throw this.unavailable(path, method, last);
  }

  /** Runs a txn: `compare` all hold → `success` ops, else `failure` ops. */
  async txn(compare: Json[], success: Json[], failure: Json[], path: string, signal?: AbortSignal): Promise<TxnResult> {
    const json = await this.call('kv/txn', { compare, success, failure }, path, signal ? { signal } : {});
    const responses = (json.responses as Json[] | undefined) ?? [];
    return {
      succeeded: json.succeeded === true,
      revision: big((json.header as Json | undefined)?.revision),
      ranges: responses.map((r) => (((r.response_range as Json | undefined)?.kvs as Json[] | undefined) ?? []).map(decodeKv)),
    };
  }

  /** Every key starting with `prefix`, oldest first (a linearizable read; safe to retry). */
  async range(prefix: string, path: string): Promise<{ revision: bigint; kvs: KeyValue[] }> {
    const op = rangeOp(prefix).request_range as Json;
    const json = await this.call('kv/range', op, path, { retry: true });
    return {
      revision: big((json.header as Json | undefined)?.revision),
      kvs: ((json.kvs as Json[] | undefined) ?? []).map(decodeKv),
    };
  }

  /** Grants a lease of `ttl` seconds; returns its id, the TTL the server granted and the store's revision then. */
  async grant(ttl: number, path: string): Promise<{ id: bigint; ttl: number; revision: bigint }> {
    const json = await this.call('lease/grant', { TTL: String(ttl) }, path, { retry: true });
    if (json.error) throw this.unavailable(path, 'lease/grant', new Error(String(json.error)));
    return { id: big(json.ID), ttl: Number(json.TTL), revision: big((json.header as Json | undefined)?.revision) };
  }

  /** One keep-alive of a lease: the TTL it has again, or 0 when the lease is gone. */
  async keepAlive(id: bigint, path: string): Promise<number> {
    const json = await this.call('lease/keepalive', { ID: id.toString() }, path, { retry: true });
    const result = json.result as Json | undefined;
    if (!result) throw this.unavailable(path, 'lease/keepalive', new Error(JSON.stringify(json.error ?? json)));
    return Number(result.TTL ?? 0);
  }

  /** Revokes a lease (every key under it goes). A lease already gone counts as revoked. */
  async revoke(id: bigint, path: string): Promise<void> {
    try {
      await this.call('lease/revoke', { ID: id.toString() }, path, { retry: true });
    } catch (err) {
      if (!String((err as Error).message).includes('lease not found')) throw err;
    }
  }

  /**
   * Opens a watch of deletions of every key starting with `prefix` from
   * revision `start` on, on the current endpoint (the next one after a
   * failure): `onMessage` gets each message of the stream as its line
   * arrives, `onEnd` once, when the stream breaks or ends (never after
   * `close()`). The caller resumes from the last revision it saw.
   *
   * The watch requires a leader (etcd ends it when its member loses the
   * leader, and refuses to open it on a member without one) and asks for
   * progress notifications; a stream silent for `idleMs` (no event, no
   * progress: a stopped or cut-off member) ends too, so that the caller
   * reopens it elsewhere. See docs/etcd-protocol.md ("One watch per session").
   */
  watch(
    prefix: string,
    start: bigint,
    path: string,
    idleMs: number,
    onMessage: (m: WatchMessage) => void,
    onEnd: (err: LockError) => void,
  ): WatchStream {
    const body = JSON.stringify({
      create_request: {
        key: b64(prefix),
        range_end: rangeEnd64(prefix),
        start_revision: start.toString(),
        filters: ['NOPUT'],
        progress_notify: true,
      },
    });
    const index = this.#current;
    let closed = false;
    let referenced = false;
    let socket: import('node:net').Socket | undefined;
    // Re-armed by every line; never keeps the process alive (the socket does, while referenced).
    const idle = setTimeout(() => end(new Error(`the watch was silent for ${idleMs} ms`)), idleMs).unref();
    const end = (err: unknown) => {
      if (closed) return;
      closed = true;
      clearTimeout(idle);
      req.destroy();
      // Try the next endpoint next time, unless this one answered the last request.
      if (this.#current === index) this.#current = (index + 1) % this.#endpoints.length;
      onEnd(err instanceof LockError ? err : this.unavailable(path, 'watch', err));
    };
    // The gateway passes Grpc-Metadata-* headers on as gRPC metadata: `hasleader` is etcd's "require a leader".
    const req = this.#send(index, 'watch', body, { 'grpc-metadata-hasleader': 'true' });
    req.once('socket', (s) => {
      socket = s;
      // A host that is gone (no reset) is noticed by the kernel's probes too, not only by the idle bound.
      s.setKeepAlive(true, KEEPALIVE_MS);
      if (!referenced) s.unref();
    });
    req.once('error', end);
    req.once('response', (res) => {
      const status = res.statusCode ?? 0;
      // One JSON message a line. An error (an error status, or etcd ending
      // the watch: "no leader") is a line of its own, maybe without a newline.
      const take = (text: string) => {
        const line = text.trim();
        if (!line || closed) return;
        let m: WatchMessage;
        try {
          m = parseWatch(line, path, this);
        } catch (err) {
          return end(err);
        }
        if (status >= 300) return end(new Error(`HTTP ${status}`));
        onMessage(m);
      };
      let buffered = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        idle.refresh();
        let nl: number;
        while (!closed && (nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          take(line);
        }
      });
      res.once('error', end);
      res.once('end', () => {
        take(buffered);
        end(new Error(status >= 300 ? `HTTP ${status}` : 'the watch stream ended'));
      });
    });
    return {
      close: () => {
        closed = true;
        clearTimeout(idle);
        req.destroy();
      },
      ref: (on) => {
        referenced = on;
        if (on) socket?.ref();
        else socket?.unref();
      },
    };
  }
}

function causeCode(err: Error): string {
  const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code;
  return code ? ` (${code})` : '';
}

function parseWatch(line: string, path: string, gw: Gateway): WatchMessage {
  const json = JSON.parse(line) as Json;
  const result = json.result as Json | undefined;
  if (!result) throw gw.unavailable(path, 'watch', new Error(JSON.stringify(json.error ?? json)));
  const events = (result.events as Json[] | undefined) ?? [];
  const message: WatchMessage = {
    revision: big((result.header as Json | undefined)?.revision),
    created: result.created === true,
    canceled: result.canceled === true,
    progress: result.created !== true && result.canceled !== true && events.length === 0,
    deletes: events
      .filter((e) => e.type === 'DELETE')
      .map((e) => ({ key: unb64((e.kv as Json).key), revision: big((e.kv as Json).mod_revision) })),
  };
  if (result.compact_revision !== undefined) message.compactRevision = big(result.compact_revision);
  return message;
}
