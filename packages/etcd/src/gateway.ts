/**
 * A minimal client of etcd v3's gRPC-JSON gateway (`POST /v3/...` on every
 * client URL, since etcd 3.4), through Node's own `fetch`: no gRPC stack.
 * int64 fields (revisions, lease ids) travel as decimal strings, keys and
 * values as base64. Why not the `etcd3` package: see this package's README.
 */
import { LockError } from '@x/core';

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
  deletes: DeleteEvent[];
}

type Json = Record<string, unknown>;

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

/** Whether a failed fetch certainly never reached the server (so the request was not applied). */
function notSent(err: unknown): boolean {
  const code = (err as { cause?: { code?: string } })?.cause?.code;
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

/** Talks to one cluster through its endpoints, failing over on connection errors. */
export class Gateway {
  readonly #endpoints: string[];
  readonly #timeout: number;
  #current = 0;
  /** The prefix of error messages: names the cluster. */
  readonly where: string;

  constructor(endpoints: string[], requestTimeout: number) {
    this.#endpoints = endpoints;
    this.#timeout = requestTimeout;
    this.where = endpoints.join(',');
  }

  /** An EUNAVAILABLE error about `what`. */
  unavailable(path: string, what: string, cause?: unknown): LockError {
    const detail = cause instanceof Error ? `: ${cause.message}${causeCode(cause)}` : '';
    return new LockError('EUNAVAILABLE', path, `etcd at ${this.where} did not answer ${what}${detail}`, { cause });
  }

  /**
   * POSTs `body` to `/v3/<method>` and returns the JSON answer. A refused
   * connection moves on to the next endpoint (the request never arrived); a
   * timeout or an error answer does not (a write may have been applied), it
   * rejects EUNAVAILABLE. `retry` requests are safe to repeat anywhere.
   */
  async call(method: string, body: Json, path: string, options: { signal?: AbortSignal; retry?: boolean } = {}): Promise<Json> {
    let last: unknown;
    for (let i = 0; i < this.#endpoints.length; i++) {
      const index = (this.#current + i) % this.#endpoints.length;
      const signals = [AbortSignal.timeout(this.#timeout)];
      if (options.signal) signals.push(options.signal);
      let res: Response;
      try {
        res = await fetch(`${this.#endpoints[index]}/v3/${method}`, {
          method: 'POST',
          body: JSON.stringify(body),
          headers: { 'content-type': 'application/json' },
          signal: AbortSignal.any(signals),
        });
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason;
        last = err;
        if (notSent(err) || options.retry) continue;
        throw this.unavailable(path, method, err);
      }
      let json: Json;
      try {
        json = (await res.json()) as Json;
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason;
        last = err;
        if (options.retry) continue;
        throw this.unavailable(path, method, err);
      }
      if (res.ok) {
        this.#current = index;
        return json;
      }
      last = new Error(String(json.message ?? json.error ?? res.statusText));
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

  /** Grants a lease of `ttl` seconds; returns its id and the TTL the server granted. */
  async grant(ttl: number, path: string): Promise<{ id: bigint; ttl: number }> {
    const json = await this.call('lease/grant', { TTL: String(ttl) }, path, { retry: true });
    if (json.error) throw this.unavailable(path, 'lease/grant', new Error(String(json.error)));
    return { id: big(json.ID), ttl: Number(json.TTL) };
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
   * Watches deletions of every key starting with `prefix` from revision
   * `start` on, yielding each message of the stream until `signal` aborts
   * (then it returns quietly) or the stream breaks (then it throws, and the
   * caller resumes from the last revision it saw). Tries each endpoint.
   */
  async *watchDeletes(prefix: string, start: bigint, path: string, signal: AbortSignal): AsyncGenerator<WatchMessage> {
    const body = JSON.stringify({
      create_request: { key: b64(prefix), range_end: rangeEnd64(prefix), start_revision: start.toString(), filters: ['NOPUT'] },
    });
    let res: Response | undefined;
    let last: unknown;
    for (let i = 0; i < this.#endpoints.length && !res; i++) {
      const index = (this.#current + i) % this.#endpoints.length;
      try {
        res = await fetch(`${this.#endpoints[index]}/v3/watch`, { method: 'POST', body, signal });
        if (!res.ok || !res.body) {
          last = new Error(`HTTP ${res.status}`);
          res = undefined;
        }
      } catch (err) {
        if (signal.aborted) return;
        last = err;
      }
    }
    if (!res?.body) throw this.unavailable(path, 'watch', last);
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for await (const chunk of res.body) {
        buffered += decoder.decode(chunk as Uint8Array, { stream: true });
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line) yield parseWatch(line, path, this);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      throw this.unavailable(path, 'watch', err);
    }
    if (signal.aborted) return;
    if (buffered.trim()) yield parseWatch(buffered.trim(), path, this);
    throw this.unavailable(path, 'watch', new Error('the watch stream ended'));
  }
}

function causeCode(err: Error): string {
  const code = (err as { cause?: { code?: string } }).cause?.code;
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
    deletes: events
      .filter((e) => e.type === 'DELETE')
      .map((e) => ({ key: unb64((e.kv as Json).key), revision: big((e.kv as Json).mod_revision) })),
  };
  if (result.compact_revision !== undefined) message.compactRevision = big(result.compact_revision);
  return message;
}
