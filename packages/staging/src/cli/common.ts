/**
 * What every `xstage` command shares: exit codes (sysexits(3), flock(1)),
 * argument parsing, output and the renderings of times, sizes and holders.
 */
import type { LockOwner } from '@x/core';
import { parseArgs } from 'node:util';
import { errnoOf } from '../internal/fsutil.js';

export const EX_USAGE = 64;
export const EX_NOINPUT = 66;
export const EX_UNAVAILABLE = 69;
export const EX_SOFTWARE = 70;
export const EX_OSERR = 71;
export const EX_CANTCREAT = 73;
export const EX_TEMPFAIL = 75;
export const EX_NOEXEC = 126;
export const EX_NOTFOUND = 127;

/** A usage error: the message goes to stderr with a pointer to `--help`, exit 64. */
export class UsageError extends Error {}

export type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

export const help = { help: { type: 'boolean', short: 'h' } } as const;

/** Parses a command's arguments; a parse error is a UsageError. */
export function parse<T extends Options>(
  args: string[],
  options: T,
): ReturnType<typeof parseArgs<{ args: string[]; options: typeof help & T; allowPositionals: true; strict: true }>> {
  try {
    return parseArgs({ args, options: { ...help, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      // Node's own text ends in an unbalanced quote (as in '-- "--foo"): say it ourselves.
      const name = /'([^']*)'/.exec((err as Error).message)?.[1] ?? '?';
      throw new UsageError(`unknown option '${name}' (an argument that starts with '-' goes after '--')`);
    }
    if (code?.startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message);
    throw err;
  }
}

/** Writes to stdout. */
export const out = (text: string): void => void process.stdout.write(text);
/** Writes to stderr. */
export const err = (text: string): void => void process.stderr.write(text);

/** A duration for people: `850ms`, `3.2s`, `4m10s`, `2h5m`, `3d4h`. */
export function seconds(ms: number | undefined): string {
  if (ms === undefined) return '?';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${Math.floor(s % 60)}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h${m % 60}m` : `${Math.floor(h / 24)}d${h % 24}h`;
}

/** ` by pid N on host`, or empty when unknown. */
export function holderText(owner: LockOwner | null | undefined): string {
  if (!owner?.pid) return '';
  return ` by pid ${owner.pid}${owner.hostname ? ` on ${owner.hostname}` : ''}`;
}

/** The owner fields of the JSON schema; null when unknown. */
export function ownerFields(owner: LockOwner | null) {
  return {
    pid: owner?.pid ?? null,
    hostname: owner?.hostname ?? null,
    backend: owner?.backend ?? null,
    age: owner?.age ?? null,
    startedAt: owner?.startedAt ?? null,
    shared: owner?.held ? (owner.shared ?? null) : null,
    holders: owner?.held ? (owner.holders ?? null) : null,
  };
}

/**
 * What the kernel says of a held lock's holders: `shared by posix pid 12,
 * ofd (pid not given)`, or empty when unknown.
 */
export function holdersText(owner: LockOwner | null | undefined): string {
  const hs = owner?.held ? owner.holders : undefined;
  if (!hs || hs.length === 0) return '';
  const through = owner?.fdPids?.length ? `(held through pid ${owner.fdPids.join(', ')})` : '(pid not given)';
  const list = hs.map((h) => `${h.kind} ${h.pid !== undefined ? `pid ${h.pid}` : through}`).join(', ');
  return `; ${owner?.shared ? 'shared' : 'exclusive'}: ${list}`;
}

/** A size for people: `512 B`, `1.5 MiB`. */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}
