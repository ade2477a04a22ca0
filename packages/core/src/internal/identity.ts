/**
 * Process identity and liveness: who this process is (host, boot, pid
 * namespace, start time), and the one judgement of whether the process a
 * record or the kernel names is alive, used by every backend, by `ELOCKED`
 * messages and by `readOwner`. See docs/interop.md ("Is the holder alive").
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import type { LockOwner } from '../owner.js';

function readOr(read: () => string): string | undefined {
  try {
    return read().trim();
  } catch {
    return undefined;
  }
}

/** What /proc/<pid>/stat says of a process: its state letter and start time. */
export interface ProcStat {
  /** `R`, `S`, `D`, `T`, `Z` (zombie), `X` (dead)... */
  readonly state: string;
  /** Start time in clock ticks since boot (field 22). */
  readonly startTicks: number | undefined;
}

/** @returns the process's state and start time, or undefined when /proc has no such process. */
export function procStat(pid: number): ProcStat | undefined {
  const stat = readOr(() => readFileSync(`/proc/${pid}/stat`, 'utf8'));
  if (!stat) return undefined;
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[19]);
  return { state: fields[0] ?? '', startTicks: Number.isSafeInteger(ticks) ? ticks : undefined };
}

/** This process's pid (`process.pid` is a getpid(2) call per read; a process keeps its pid). */
export const selfPid = process.pid;

let selfTicks: number | undefined;
/** Start time of a process in clock ticks since boot (field 22 of /proc/pid/stat); this process's is cached. */
export function processStartTicks(pid: number): number | undefined {
  if (pid === process.pid && selfTicks !== undefined) return selfTicks;
  const ticks = procStat(pid)?.startTicks;
  if (pid === process.pid) selfTicks = ticks;
  return ticks;
}

/** This host's and process's identity, read once. */
export interface Identity {
  readonly hostname: string;
  readonly bootId: string | undefined;
  readonly pidNs: string | undefined;
}

let identity: Identity | undefined;
/** @returns this process's host identity (cached). */
export function selfIdentity(): Identity {
  identity ??= {
    hostname: osHostname(),
    bootId: readOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8')),
    pidNs: readOr(() => readlinkSync('/proc/self/ns/pid')),
  };
  return identity;
}

/** The fields of an owner that say which process it is. */
export type ProcessRef = Pick<LockOwner, 'pid' | 'hostname' | 'bootId' | 'pidNs' | 'startTicks' | 'version' | 'age'>;

/**
 * The owner's pid when it is a process this one can see: a record of ours
 * (it has a version) written on this host, boot and pid namespace; or a pid
 * the kernel or a caller gave (no version, not read from a file) on this
 * host. A legacy pid file (read from a file, no version) does not say where
 * its pid lives, so it is not local.
 */
export function localPid(owner: ProcessRef | null | undefined): number | undefined {
  const pid = owner?.pid;
  if (pid === undefined || !Number.isSafeInteger(pid) || pid <= 0 || pid > 0x7fffffff) return undefined;
  const me = selfIdentity();
  if (owner!.version !== undefined) {
    if (owner!.hostname !== me.hostname || !me.bootId || owner!.bootId !== me.bootId) return undefined;
    if (!me.pidNs || owner!.pidNs !== me.pidNs) return undefined;
    return pid;
  }
  if (owner!.age !== undefined) return undefined;
  return owner!.hostname === undefined || owner!.hostname === me.hostname ? pid : undefined;
}

/**
 * `kill(pid, 0)`: false only on `ESRCH` (no such process). A zombie still
 * answers, and `EPERM` (someone else's process) counts as running.
 */
export function signalable(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** The number of threads of a process (/proc/<pid>/status), or undefined. */
function threadCount(pid: number): number | undefined {
  try {
    const m = /^Threads:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What this host can tell of the process an owner names:
 * - `'self'`: this very process (same start time, when recorded);
 * - `'dead'`: proven: a local process (see {@link localPid}) that is gone
 *   (`ESRCH`), a zombie with no thread left (it holds nothing and can never
 *   renew a lease, reaped or not), or another process by its start time (the
 *   pid was reused);
 * - `'alive'`: a local process that runs (`EPERM` counts as running);
 * - `'unknown'`: not visible from here (another host, boot or pid namespace,
 *   a legacy pid file, no pid): callers treat it as alive.
 *
 * The only place that decides whether a holder is alive: deleting or taking
 * over anything needs `'dead'`.
 */
export function holderLiveness(owner: ProcessRef | null | undefined): 'self' | 'alive' | 'dead' | 'unknown' {
  const pid = localPid(owner);
  if (pid === undefined) return 'unknown';
  const ticks = owner!.startTicks;
  if (pid === process.pid) {
    const mine = processStartTicks(pid);
    return ticks === undefined || mine === undefined || ticks === mine ? 'self' : 'dead';
  }
  if (!signalable(pid)) return 'dead';
  const stat = procStat(pid);
  if (stat === undefined) return 'alive';
  // /proc/<pid>/stat shows the main thread: a process whose main thread
  // exited while others run reads `Z` too, so only a lone thread counts.
  if ((stat.state === 'Z' || stat.state === 'X') && threadCount(pid) === 1) return 'dead';
  if (ticks !== undefined && stat.startTicks !== undefined && stat.startTicks !== ticks) return 'dead';
  return 'alive';
}
