/**
 * Owner records: who holds a lock file, written by both backends.
 *
 * Format (version 1), one line of JSON, UTF-8:
 *
 * ```json
 * {"v":1,"backend":"kernel","pid":4242,"hostname":"build-3","bootId":"6c1f…",
 *  "pidNs":"pid:[4026531836]","startTicks":123456,"createdAt":1763884800000,
 *  "token":"9f2c…","leaseMs":30000}
 * ```
 *
 * `token` and `leaseMs` are written by the lease backend only; `backend` is
 * `kernel`, `flock` or `lease`. Every record starts with {@link RECORD_PREFIX}:
 * that is how a kernel or flock lock tells a file holding one of our records
 * (which it may rewrite) from another program's lock file (which it never
 * writes, truncates or deletes; see docs/interop.md). Readers must
 * accept missing fields, unknown fields, a longer tail after the JSON (a
 * record is replaced in place, then truncated), and the legacy "pid" /
 * "pid hostname" text files of nftban and Julia's Pidfile.
 */
import { open } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import { addon, LockType } from './platform/native.js';
import { kernelHolders, fdHolderPids } from './internal/proclocks.js';
import { holderLiveness, localPid, processStartTicks, selfIdentity, selfPid, signalable } from './internal/identity.js';

/**
 * The first bytes of every owner record we write (version 1): a non-empty
 * lock file that does not start with them belongs to another program.
 */
export const RECORD_PREFIX = '{"v":1,"backend":"';

/** One lock the kernel holds on a file (see {@link LockOwner.holders}). */
export interface LockHolder {
  /**
   * `posix`: a classic `fcntl` lock (podman, Go's containers/storage, Python
   * `lockf`); `ofd`: an open-file-description lock (our `kernel` backend);
   * `flock`: a `flock(2)` lock (flock(1), Python `filelock`, our `flock` backend).
   */
  kind: 'posix' | 'ofd' | 'flock';
  /** A shared (read) lock. */
  shared: boolean;
  /**
   * The process that took it; undefined for OFD locks (the kernel reports
   * -1). For a flock lock, that process may have exited after passing the
   * descriptor on (a shell's `exec 9>L; flock -n 9`).
   */
  pid: number | undefined;
}

/** The holder of a lock, as its lock file records it. */
export interface LockOwner {
  /** The owner's process id (in `pidNs`, when recorded). */
  pid?: number | undefined;
  /** The owner's host name. */
  hostname?: string | undefined;
  /** Which backend wrote the record. */
  backend?: 'kernel' | 'flock' | 'lease' | undefined;
  /** When the lock was taken, in ms since the epoch. */
  startedAt?: number | undefined;
  /** Ms since the record was last written or refreshed (from the file's mtime). */
  age?: number | undefined;
  /** Format version of the record. */
  version?: number | undefined;
  /** Lease token (lease backend): unique per acquisition. */
  token?: string | undefined;
  /** Lease length in ms the holder promised to refresh within (lease backend). */
  leaseMs?: number | undefined;
  /** Linux boot id of the owner's host. */
  bootId?: string | undefined;
  /** The owner's pid namespace (`readlink /proc/self/ns/pid`). */
  pidNs?: string | undefined;
  /** The owner process's start time in clock ticks since boot (Linux). */
  startTicks?: number | undefined;
  /**
   * Whether the lock is held right now, shared or exclusively. Kernel lock
   * files: what the kernel says (`false` means the record is a previous
   * holder's). Lease files: an
   * estimate, `false` when the recorded process is not running on this host
   * or the last heartbeat (the file's mtime) is older than the lease; a
   * taker decides on stronger rules (see the lease backend).
   */
  held?: boolean | undefined;
  /**
   * Held only by shared (read) locks: `true`; held exclusively: `false`.
   * Kernel lock files on Linux (from /proc/locks); undefined otherwise.
   */
  shared?: boolean | undefined;
  /**
   * Every lock the kernel holds on the file (Linux, from /proc/locks):
   * classic POSIX `fcntl` holders (podman, Python `lockf`) and `flock(2)`
   * holders (flock(1), our `flock` backend) with their pid, our OFD locks
   * without one (the kernel does not give it: the owner record names an
   * exclusive holder). Undefined where the kernel cannot be asked.
   */
  holders?: LockHolder[] | undefined;
  /**
   * The processes whose descriptors hold an OFD or flock lock on the file,
   * when neither a record nor the kernel named the holder and they had to be
   * looked up (Linux: a scan of /proc/<pid>/fdinfo; processes of other users
   * need privileges). A descriptor passed to a child (`xstage run`) is held
   * by both.
   */
  fdPids?: number[] | undefined;
}

/** The text of this process's records up to `createdAt`'s digits, per backend (built once). */
const selfHeads = new Map<string, string>();

/**
 * The part of a record before `createdAt`'s digits: what names the holder,
 * which never changes between two records of one process and backend.
 */
export function recordHead(backend: 'kernel' | 'flock' | 'lease', pid: number): string {
  const mine = pid === selfPid;
  let head = mine ? selfHeads.get(backend) : undefined;
  if (head === undefined) {
    const id = selfIdentity();
    const fixed = JSON.stringify({
      v: 1,
      backend,
      pid,
      hostname: id.hostname,
      bootId: id.bootId,
      pidNs: id.pidNs,
      startTicks: processStartTicks(pid),
    });
    head = `${fixed.slice(0, -1)},"createdAt":`;
    if (mine) selfHeads.set(backend, head);
  }
  return head;
}

/**
 * Builds a record (the one format of every backend, see the module comment),
 * stamped now; `token` and `leaseMs` are the lease's.
 */
export function formatRecord(
  backend: 'kernel' | 'flock' | 'lease',
  pid: number,
  lease?: { token: string; leaseMs: number },
): string {
  const tail = lease ? `,"token":${JSON.stringify(lease.token)},"leaseMs":${lease.leaseMs}` : '';
  return `${recordHead(backend, pid)}${Date.now()}${tail}}\n`;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);
const int = (v: unknown): number | undefined => (Number.isSafeInteger(v) ? (v as number) : undefined);

/**
 * Parses a record's text. Never throws: garbage gives `null`, a partial
 * record gives the fields it has.
 */
export function parseRecord(text: string, mtimeMs?: number): LockOwner | null {
  const age = mtimeMs === undefined ? undefined : Math.max(0, Math.round(Date.now() - mtimeMs));
  const trimmed = text.replace(/\0+$/, '').trim();
  if (trimmed.startsWith('{')) {
    // A record rewritten in place may be followed by the old record's tail.
    const end = trimmed.indexOf('}\n') >= 0 ? trimmed.indexOf('}\n') + 1 : trimmed.length;
    let raw: unknown;
    try {
      raw = JSON.parse(trimmed.slice(0, end));
    } catch {
      return null;
    }
    if (typeof raw !== 'object' || raw === null) return null;
    const r = raw as Record<string, unknown>;
    const backend = r.backend === 'kernel' || r.backend === 'flock' || r.backend === 'lease' ? r.backend : undefined;
    const pid = int(r.pid);
    return {
      pid: pid !== undefined && pid > 0 ? pid : undefined,
      hostname: str(r.hostname),
      backend,
      startedAt: int(r.createdAt),
      age,
      version: int(r.v),
      token: str(r.token),
      leaseMs: int(r.leaseMs),
      bootId: str(r.bootId),
      pidNs: str(r.pidNs),
      startTicks: int(r.startTicks),
    };
  }
  // Legacy text: "1234" (nftban) or "1234 hostname" (Julia Pidfile).
  const m = /^(\d{1,10})(?:[ \t]+(\S+))?$/.exec(trimmed);
  if (!m) return null;
  const pid = Number(m[1]);
  if (pid <= 0 || pid > 0x7fffffff) return null;
  return { pid, hostname: m[2], age };
}

/**
 * Who holds a kernel-locked file, from its record and what the kernel says:
 * `holders` from /proc/locks (undefined where it cannot be read) and
 * `getlkPid` from F_OFD_GETLK (0 free, >0 a POSIX holder's pid, -1 held by
 * an OFD lock, < -1 not asked). The record is believed only while it names
 * a holder the kernel still sees: a pid among the holders, or a live process
 * and an exclusive OFD lock (whose pid the kernel does not give). Otherwise
 * it is a past holder's, and the first pid the kernel gives is the owner.
 * `held: false` keeps the record: it names the last holder.
 */
export function judgeKernelOwner(
  record: LockOwner | null,
  holders: LockHolder[] | undefined,
  getlkPid: number,
): LockOwner | null {
  if (!holders) {
    // No /proc/locks: what F_OFD_GETLK says (POSIX holders named; others trusted).
    if (getlkPid < -1) return record;
    if (getlkPid === 0) return record ? { ...record, held: false } : null;
    if (getlkPid > 0 && record?.pid !== getlkPid) return { pid: getlkPid, held: true };
    return { ...record, held: true };
  }
  if (holders.length === 0 && getlkPid <= 0) return record ? { ...record, held: false } : null;
  const shared = holders.length > 0 ? holders.every((h) => h.shared) : undefined;
  const pid = record?.pid;
  // The recorded process must be alive: a flock line keeps the pid of a
  // taker that may have exited after passing its descriptor on. Only our own
  // records can name an OFD holder (the kernel gives no pid for it): a legacy
  // pid file belongs to another program, which never holds an OFD lock on it.
  const named =
    pid !== undefined &&
    (holders.some((h) => h.pid === pid) ||
      (record!.version !== undefined && holders.some((h) => h.kind === 'ofd' && !h.shared))) &&
    holderLiveness(record) !== 'dead';
  if (named) return { ...record, held: true, shared, holders };
  // A flock(2) lock keeps the pid of the process that took it, which may have
  // exited after handing its descriptor on (`exec 9>L; flock -n 9`): not named.
  const first =
    holders.find((h) => h.pid !== undefined && holderLiveness({ pid: h.pid }) !== 'dead')?.pid ??
    (getlkPid > 0 ? getlkPid : undefined);
  return { pid: first, held: true, shared, holders };
}

/**
 * Reads the owner record of a lock file of either backend.
 *
 * @remarks Tolerant of empty, partial or garbage content: it resolves `null`
 * or a partial owner and never rejects because of what the file holds. It
 * does not follow a symlink at `path`, and reading never disturbs a kernel
 * lock held by this process (open-file-description locks are not dropped by
 * closing another descriptor).
 *
 * For a kernel lock file it asks the kernel who holds it (`F_OFD_GETLK`, and
 * on Linux `/proc/locks`, which also sees `flock(2)` locks): `held` is true
 * for shared holders too, `shared` and `holders` say how it is held, and a
 * classic POSIX or flock holder (podman, Python, flock(1)) is named by its
 * pid. The record is believed only while the kernel still shows its holder;
 * otherwise it names a past holder and the kernel's pid is the owner. It
 * takes no lock itself. See docs/interop.md ("Finding a holder").
 *
 * @param path - the lock file
 * @returns the owner, or `null` when the file is missing, or free and naming
 * no one. `held` says whether it is held right now (see {@link LockOwner.held}).
 * @throws `TypeError` for a bad `path`; OS errors other than `ENOENT` (such as
 * `EACCES`, `ELOOP`) reject with their `code` and `path`.
 *
 * @example
 * ```ts
 * const owner = await readOwner('/var/lib/store/layers.lock');
 * if (owner) console.log(`held by pid ${owner.pid} on ${owner.hostname}, ${owner.age} ms ago`);
 * ```
 */
export async function readOwner(path: string): Promise<LockOwner | null> {
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    throw new TypeError(`Expected \`path\` to be a non-empty string without NUL bytes, got \`${String(path)}\` (${typeof path})`);
  }
  let handle;
  try {
    handle = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const st = await handle.stat({ bigint: true });
    if (!st.isFile()) return null;
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    const owner = parseRecord(buf.toString('utf8', 0, bytesRead), Number(st.mtimeMs));
    if (owner?.backend === 'lease') {
      const expired = owner.leaseMs !== undefined && owner.age !== undefined && owner.age > owner.leaseMs;
      const alive = holderLiveness(owner) !== 'dead';
      return { ...owner, held: alive && !expired };
    }
    if (!addon) return owner;
    // Ask the kernel who holds it; a classic POSIX holder (podman, python's
    // lockf) or a flock(2) holder writes no record of ours, but the kernel
    // names its pid.
    const judged = judgeKernelOwner(owner, kernelHolders(st.dev, st.ino), addon.getlk(handle.fd, LockType.Exclusive));
    // A holder neither a record nor the kernel names (OFD: a foreign file
    // gets no record, a shared lock writes none; OFD or flock: the process
    // that took it died after passing its descriptor on): find the processes
    // whose descriptors hold it.
    if (judged?.held && judged.pid === undefined && judged.holders?.some((h) => h.kind !== 'posix')) {
      const pids = fdHolderPids(st.dev, st.ino);
      if (pids.length > 0) return { ...judged, pid: pids[0], fdPids: pids };
    }
    return judged;
  } finally {
    await handle.close();
  }
}

/**
 * Whether a process is running, conservatively.
 *
 * @remarks Only `ESRCH` proves a process dead: `EPERM` (someone else's
 * process) counts as alive, and so does a zombie until it is reaped. A
 * `hostname` other than this host's means "alive" (we cannot see it). Pid 0,
 * negative numbers, non-integers and values beyond 2^31-1 are not processes
 * (`process.kill(0)` would probe our own process group), so they give
 * `false`. Taking over a lease needs more proof than this, and sees through
 * zombies and reused pids (docs/interop.md, "Is the holder alive").
 *
 * @param pid - the process id
 * @param hostname - the host the pid belongs to; omitted means this host
 * @returns `true` unless the process is provably not running
 *
 * @example
 * ```ts
 * const owner = await readOwner(lockPath);
 * if (owner?.pid && !isProcessAlive(owner.pid, owner.hostname)) console.log('holder is gone');
 * ```
 */
export function isProcessAlive(pid: number, hostname?: string): boolean {
  if (typeof pid !== 'number') throw new TypeError(`Expected \`pid\` to be a number, got \`${String(pid)}\` (${typeof pid})`);
  if (hostname !== undefined && typeof hostname !== 'string') {
    throw new TypeError(`Expected \`hostname\` to be a string, got \`${String(hostname)}\` (${typeof hostname})`);
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid > 0x7fffffff) return false;
  const local = localPid({ pid, hostname: hostname === '' ? undefined : hostname });
  return local === undefined || signalable(local);
}
