/** Argument checking of @x/etcd: every bad argument is a TypeError naming it and its value. */
import type { LockError } from '@x/core';

/** Options of {@link EtcdLocks.connect}. */
export interface EtcdLocksOptions {
  /**
   * The cluster's client URLs (`http://host:2379`), as an array or one
   * comma-separated string. Requests go to one at a time; a refused
   * connection moves on to the next.
   */
  endpoints: string | readonly string[];
  /** The key prefix every lock of this set lives under. @defaultValue `'/xlock/'` */
  prefix?: string;
  /**
   * The session lease's time to live in whole seconds: how long after this
   * process stops (crash, SIGKILL, partition) its locks come back. etcd may
   * raise a very small TTL to its minimum (about 2 s with default timing).
   * @defaultValue `10`
   */
  ttl?: number;
  /** How long one request to etcd may take before it fails `EUNAVAILABLE`, in ms. @defaultValue `5000` */
  requestTimeout?: number;
  /**
   * For `https://` endpoints: the CA that signed the cluster's certificates
   * (instead of the system's) and this client's certificate and key, when
   * the cluster checks client certificates (`--client-cert-auth`). PEM text
   * or buffers.
   */
  tls?: TlsOptions;
}

/** TLS material for `https://` endpoints (see {@link EtcdLocksOptions.tls}). */
export interface TlsOptions {
  /** The certificate authority (or authorities) to trust instead of the system's. */
  ca?: string | Buffer | (string | Buffer)[];
  /** This client's certificate chain (PEM); with `key`. */
  cert?: string | Buffer;
  /** This client's private key (PEM); with `cert`. */
  key?: string | Buffer;
}

/** Options of {@link EtcdLocks.tryLock}, {@link EtcdLocks.lock} and {@link EtcdLocks.withLock}. */
export interface EtcdLockOptions {
  /** `lock()`: give up after this many ms with `ETIMEDOUT`. @defaultValue `Infinity` */
  timeout?: number;
  /** `lock()`: abort the wait; the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Called once when the lock is lost (lease expired or revoked, key deleted). Never thrown from a timer. */
  onCompromised?: (error: LockError) => void;
}

/** Renders a value for an error message. */
export function show(value: unknown): string {
  if (typeof value === 'string') return `${JSON.stringify(value.length > 80 ? value.slice(0, 80) + '…' : value)} (string)`;
  if (typeof value === 'bigint') return `${value}n (bigint)`;
  if (value === null) return 'null';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object') return Array.isArray(value) ? 'an array' : 'an object';
  return `\`${String(value)}\` (${typeof value})`;
}

function fail(name: string, expected: string, value: unknown): never {
  throw new TypeError(`Expected \`${name}\` to be ${expected}, got ${show(value)}`);
}

const control = /[\u0000-\u001f\u007f]/;
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Checks a lock name: 1 to 255 characters, no `/`, no control characters, not `.` or `..`. */
export function checkName(value: unknown): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > 255 ||
    value.includes('/') ||
    control.test(value) ||
    value === '.' ||
    value === '..' ||
    loneSurrogate.test(value)
  ) {
    fail('name', 'a string of 1 to 255 characters without "/" or control characters, not "." or ".."', value);
  }
  return value;
}

/** The checked {@link EtcdLocksOptions}. */
export interface CheckedConnect {
  endpoints: string[];
  prefix: string;
  ttl: number;
  requestTimeout: number;
  tls: TlsOptions | undefined;
}

const pem = (v: unknown): boolean => typeof v === 'string' || Buffer.isBuffer(v);

function checkTls(value: unknown, endpoints: string[]): TlsOptions | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('tls', 'an object { ca, cert, key }', value);
  const t = value as Record<string, unknown>;
  for (const key of Object.keys(t))
    if (!['ca', 'cert', 'key'].includes(key)) throw new TypeError(`Unknown option \`tls.${key}\` (known: ca, cert, key)`);
  if (t.ca !== undefined && !pem(t.ca) && !(Array.isArray(t.ca) && t.ca.length > 0 && t.ca.every(pem)))
    fail('tls.ca', 'PEM text or a Buffer (or an array of them)', t.ca);
  if (t.cert !== undefined && !pem(t.cert)) fail('tls.cert', 'PEM text or a Buffer', t.cert);
  if (t.key !== undefined && !pem(t.key)) fail('tls.key', 'PEM text or a Buffer', t.key);
  if ((t.cert === undefined) !== (t.key === undefined)) fail('tls', 'both `cert` and `key`, or neither', value);
  if (endpoints.some((e) => !e.startsWith('https:'))) fail('endpoints', 'https:// URLs when `tls` is given', endpoints.join(','));
  const tls: TlsOptions = {};
  if (t.ca !== undefined) tls.ca = t.ca as TlsOptions['ca'];
  if (t.cert !== undefined) tls.cert = t.cert as string | Buffer;
  if (t.key !== undefined) tls.key = t.key as string | Buffer;
  return tls;
}

function checkEndpoints(value: unknown): string[] {
  const list = typeof value === 'string' ? value.split(',') : value;
  if (!Array.isArray(list) || list.length === 0)
    fail('endpoints', 'a non-empty array of http(s) URLs or a comma-separated string', value);
  const urls = (list as unknown[]).map((e: unknown) => {
    let url: URL | undefined;
    try {
      if (typeof e === 'string') url = new URL(e.trim());
    } catch {
      // reported below
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search || url.hash || url.username) {
      fail('endpoints', 'http(s) URLs such as "http://127.0.0.1:2379"', e);
    }
    return url.href.replace(/\/+$/, '');
  });
  if (new Set(urls.map((u) => u.slice(0, u.indexOf(':')))).size > 1)
    fail('endpoints', 'URLs of one scheme (all http:// or all https://)', value);
  return urls;
}

/** Checks the options of `EtcdLocks.connect()`. */
export function checkConnect(options: unknown): CheckedConnect {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) fail('options', 'an object', options);
  const o = options as Record<string, unknown>;
  const known = new Set(['endpoints', 'prefix', 'ttl', 'requestTimeout', 'tls']);
  for (const key of Object.keys(o))
    if (!known.has(key)) throw new TypeError(`Unknown option \`${key}\` (known: ${[...known].join(', ')})`);
  const endpoints = checkEndpoints(o.endpoints);
  let prefix = o.prefix ?? '/xlock/';
  if (
    typeof prefix !== 'string' ||
    prefix.length === 0 ||
    prefix.length > 1024 ||
    control.test(prefix) ||
    loneSurrogate.test(prefix)
  ) {
    fail('prefix', 'a non-empty string without control characters', prefix);
  }
  if (!prefix.endsWith('/')) prefix += '/';
  const ttl = o.ttl ?? 10;
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > 1_000_000)
    fail('ttl', 'a whole number of seconds from 1', ttl);
  const requestTimeout = o.requestTimeout ?? 5000;
  if (typeof requestTimeout !== 'number' || !Number.isFinite(requestTimeout) || requestTimeout <= 0)
    fail('requestTimeout', 'a positive number of ms', requestTimeout);
  return { endpoints, prefix: prefix as string, ttl, requestTimeout, tls: checkTls(o.tls, endpoints) };
}

/** The checked {@link EtcdLockOptions}. */
export interface CheckedLock {
  timeout: number;
  signal: AbortSignal | undefined;
  onCompromised: ((error: LockError) => void) | undefined;
}

/** Checks the options of `tryLock()`, `lock()` and `withLock()`. */
export function checkLock(options: unknown): CheckedLock {
  if (options === undefined) return { timeout: Infinity, signal: undefined, onCompromised: undefined };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) fail('options', 'an object', options);
  const o = options as Record<string, unknown>;
  const known = new Set(['timeout', 'signal', 'onCompromised']);
  for (const key of Object.keys(o))
    if (!known.has(key)) throw new TypeError(`Unknown option \`${key}\` (known: ${[...known].join(', ')})`);
  const timeout = o.timeout ?? Infinity;
  if (typeof timeout !== 'number' || Number.isNaN(timeout) || timeout < 0) fail('timeout', 'a number of ms, 0 or more', timeout);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) fail('signal', 'an AbortSignal', o.signal);
  if (o.onCompromised !== undefined && typeof o.onCompromised !== 'function')
    fail('onCompromised', 'a function', o.onCompromised);
  return {
    timeout,
    signal: o.signal as AbortSignal | undefined,
    onCompromised: o.onCompromised as CheckedLock['onCompromised'],
  };
}
