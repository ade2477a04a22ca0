/**
 * `xstage run --etcd`, `xstage status --etcd` and `xstage recover --etcd`:
 * the same commands with the locks in etcd (@x/etcd) instead of lock files. @x/etcd is an optional peer
 * of @x/staging, imported only here and only when `--etcd` is given, so
 * local users never install it.
 */
import type { EtcdLocks } from '@x/etcd';
import { isLockError } from '@x/core';
import { EX_TEMPFAIL, err, holderText, out, seconds, UsageError } from './common.js';

/** sysexits(3) EX_UNAVAILABLE: @x/etcd is not installed, or etcd cannot be reached. */
export const EX_UNAVAILABLE = 69;

/** The prefix `xstage` uses when none is given (also @x/etcd's default). */
export const DEFAULT_PREFIX = '/xlock/';

/** Connects, turning bad arguments into usage errors; undefined (after a message) when that fails. */
export async function connect(endpoints: string, prefix: string, ttl?: number): Promise<EtcdLocks | undefined> {
  let mod: typeof import('@x/etcd');
  try {
    mod = await import('@x/etcd');
  } catch (e) {
    err(`xstage: --etcd needs the optional package @x/etcd (npm install @x/etcd): ${(e as Error).message}\n`);
    return undefined;
  }
  try {
    return await mod.EtcdLocks.connect({ endpoints, prefix, ...(ttl === undefined ? {} : { ttl }) });
  } catch (e) {
    if (e instanceof TypeError) throw new UsageError(e.message);
    err(`xstage: ${(e as Error).message}\n`);
    return undefined;
  }
}

/** What `run` hands over: the parsed options and a way to run the command. */
export interface EtcdRun {
  endpoints: string;
  name: string;
  wait: boolean;
  timeoutMs: number;
  timeoutText: string | undefined;
  command: string[];
  /** Runs the command; aborting `signal` sends it SIGTERM. */
  runChild(command: string[], signal: AbortSignal): Promise<number>;
}

/** `xstage run --etcd <endpoints> <name> -- cmd`: holds the etcd lock `name` while the command runs. */
export async function runEtcd(r: EtcdRun): Promise<number> {
  const locks = await connect(r.endpoints, DEFAULT_PREFIX);
  if (!locks) return EX_UNAVAILABLE;
  try {
    let held;
    try {
      held = r.wait ? await locks.lock(r.name, { timeout: r.timeoutMs }) : await locks.tryLock(r.name);
    } catch (e) {
      if (e instanceof TypeError) throw new UsageError(e.message);
      if (isLockError(e, 'ELOCKED')) {
        err(`xstage: '${r.name}' is locked${holderText(e.owner)}\n`);
        return EX_TEMPFAIL;
      }
      if (isLockError(e, 'ETIMEDOUT')) {
        err(`xstage: timed out after ${r.timeoutText}s waiting for '${r.name}'\n`);
        return EX_TEMPFAIL;
      }
      err(`xstage: cannot lock '${r.name}': ${(e as Error).message}\n`);
      return EX_UNAVAILABLE;
    }
    if (held.signal.aborted) {
      // Lost between the grant and now (the lease expired meanwhile): never run unlocked.
      err(`xstage: lost the lock '${r.name}' before the command started (${(held.signal.reason as Error).message})\n`);
      return EX_TEMPFAIL;
    }
    const lost = () => {
      const reason = held.signal.reason as Error;
      if (!isLockError(reason, 'ERELEASED')) err(`xstage: lost the lock '${r.name}' (${reason.message}): stopping the command\n`);
    };
    held.signal.addEventListener('abort', lost, { once: true });
    try {
      return await r.runChild(r.command, held.signal);
    } finally {
      held.signal.removeEventListener('abort', lost);
      await held.release().catch(() => undefined);
    }
  } finally {
    await locks.close().catch(() => undefined);
  }
}

/** `xstage status --etcd <endpoints> [prefix]`: every held lock under the prefix, with holders and waiters. */
export async function statusEtcd(endpoints: string, prefix: string | undefined, json: boolean): Promise<number> {
  const locks = await connect(endpoints, prefix ?? DEFAULT_PREFIX);
  if (!locks) return EX_UNAVAILABLE;
  try {
    let held;
    try {
      held = await locks.list();
    } catch (e) {
      err(`xstage: ${(e as Error).message}\n`);
      return EX_UNAVAILABLE;
    }
    if (json) {
      const rows = held.map((h) => ({
        name: h.name,
        key: h.key,
        pid: h.owner.pid ?? null,
        hostname: h.owner.hostname ?? null,
        startedAt: h.owner.startedAt ?? null,
        fencingToken: String(h.fencingToken),
        waiting: h.waiting,
      }));
      out(`${JSON.stringify({ kind: 'etcd', endpoints: endpoints.split(','), prefix: locks.prefix, locks: rows })}\n`);
      return 0;
    }
    out(`${locks.prefix} on ${endpoints}: ${held.length} held\n`);
    if (held.length > 0) {
      out(`  ${'NAME'.padEnd(24)} ${'PID'.padEnd(8)} ${'HOST'.padEnd(16)} ${'FOR'.padEnd(8)} ${'TOKEN'.padEnd(10)} WAITING\n`);
    }
    for (const h of held) {
      const age = h.owner.startedAt === undefined ? '-' : seconds(Date.now() - h.owner.startedAt);
      out(
        `  ${h.name.padEnd(24)} ${String(h.owner.pid ?? '-').padEnd(8)} ${(h.owner.hostname ?? '-').padEnd(16)} ` +
          `${age.padEnd(8)} ${String(h.fencingToken).padEnd(10)} ${h.waiting}\n`,
      );
    }
    return 0;
  } finally {
    await locks.close().catch(() => undefined);
  }
}
