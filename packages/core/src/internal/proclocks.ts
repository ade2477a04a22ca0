/**
 * The kernel's list of file locks (Linux `/proc/locks`): the one place that
 * parses it. It names holders the lock calls cannot: flock(2) holders (no
 * F_GETLK for them), every shared holder (F_GETLK reports one), and tells
 * shared from exclusive. Lines are matched to a file by device and inode:
 *
 * ```text
 * 1: FLOCK  ADVISORY  READ 2957 fe:00:2149154 0 EOF
 * 2: POSIX  ADVISORY  WRITE 2880 fe:00:2163378 0 EOF
 * 2: -> OFDLCK ADVISORY  WRITE -1 fe:00:2163378 0 EOF     (a blocked waiter)
 * ```
 *
 * The pid is the process that took the lock; OFD locks belong to an open
 * file description, not a process, and show -1 on current kernels; a flock
 * lock shows the pid that took it, which may have exited after passing the
 * descriptor on. Which processes hold such a lock can still be found, at a
 * price: every descriptor whose /proc/<pid>/fdinfo lists it (`fdHolderPids`).
 *
 * The kernel hands the list out a page (about 80 lines) per read(2) and
 * finds its place again by line number: a lock taken or dropped elsewhere
 * between two reads shifts the list, so one line may be read twice or not
 * at all (about one read in 200 with thousands of locks coming and going).
 * A list longer than one read is therefore read three times, and each kind
 * of line counts as many times as the median pass saw it: one pass that
 * skipped a line or read it twice is outvoted. (Identical lines are not
 * merged: two shared OFD holders of one file print the same line, pid -1.)
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import type { LockHolder } from '../owner.js';

const line =
  /^\d+:\s+(->\s+)?(POSIX|OFDLCK|FLOCK)\s+\S+\s+(READ|WRITE)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+\s+(?:\d+|EOF))/;

/** glibc's st_dev encoding, split into the kernel's major and minor numbers. */
function majorMinor(dev: bigint): [number, number] {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return [Number(major), Number(minor)];
}

let buf: Buffer | undefined;

/**
 * /proc/locks in one pass: open, read until EOF into a buffer kept between
 * calls, close (readFileSync costs six times more on a file whose size
 * stat reports as 0). `reads` is how many read(2) calls it took.
 */
function readProcLocks(): { text: string; reads: number } | undefined {
  let fd;
  try {
    fd = openSync('/proc/locks', 'r');
  } catch {
    return undefined;
  }
  try {
    buf ??= Buffer.allocUnsafe(64 * 1024);
    let n = 0;
    let reads = 0;
    for (;;) {
      if (n === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, n);
        buf = bigger;
      }
      const r = readSync(fd, buf, n, buf.length - n, null);
      reads++;
      if (r === 0) break;
      n += r;
    }
    return { text: buf.toString('latin1', 0, n), reads };
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** The held (not waited for) locks of one file found in `text`, counted by what they are. */
function collect(text: string, major: number, minor: number, inode: string): Map<string, { holder: LockHolder; count: number }> {
  const found = new Map<string, { holder: LockHolder; count: number }>();
  for (const l of text.split('\n')) {
    // Cheap filter before the regular expression: the inode number must appear.
    if (!l.includes(inode)) continue;
    const m = line.exec(l);
    if (!m || m[1] || m[7] !== inode || parseInt(m[5]!, 16) !== major || parseInt(m[6]!, 16) !== minor) continue;
    const key = `${m[2]} ${m[3]} ${m[4]} ${m[8]}`;
    const seen = found.get(key);
    if (seen) {
      seen.count++;
      continue;
    }
    const pid = Number(m[4]);
    const holder: LockHolder = {
      kind: m[2] === 'POSIX' ? 'posix' : m[2] === 'FLOCK' ? 'flock' : 'ofd',
      shared: m[3] === 'READ',
      pid: pid > 0 ? pid : undefined,
    };
    found.set(key, { holder, count: 1 });
  }
  return found;
}

/**
 * The locks held (not waited for) on the file with device `dev` and inode
 * `ino` (from a bigint `stat`), or undefined when `/proc/locks` cannot be read
 * (not Linux, or /proc not mounted).
 */
export function kernelHolders(dev: bigint, ino: bigint): LockHolder[] | undefined {
  const first = readProcLocks();
  if (first === undefined) return undefined;
  const [major, minor] = majorMinor(dev);
  const inode = String(ino);
  const found = collect(first.text, major, minor, inode);
  // More than one page (the last read is the one that returns 0): a line
  // may have been skipped or read more than once, see the module comment.
  // Two more passes; each kind of line counts as many times as the median
  // pass saw it (a pass that missed it saw it 0 times).
  if (first.reads > 2) {
    const passes = [found];
    for (let pass = 0; pass < 2; pass++) {
      const again = readProcLocks();
      if (again) passes.push(collect(again.text, major, minor, inode));
    }
    if (passes.length === 3) {
      const keys = new Set(passes.flatMap((p) => [...p.keys()]));
      const merged = new Map<string, { holder: LockHolder; count: number }>();
      for (const key of keys) {
        const counts = passes.map((p) => p.get(key)?.count ?? 0).sort((a, b) => a - b);
        const holder = passes.find((p) => p.has(key))!.get(key)!.holder;
        if (counts[1]! > 0) merged.set(key, { holder, count: counts[1]! });
      }
      return [...merged.values()].flatMap(({ holder, count }) => Array.from({ length: count }, () => holder));
    }
  }
  return [...found.values()].flatMap(({ holder, count }) => Array.from({ length: count }, () => holder));
}

/**
 * The processes that have a descriptor of the file (`dev`, `ino`) holding an
 * OFD or flock lock: a scan of every process's descriptors (one `stat` each,
 * and the fdinfo of those on the file), for naming a holder the kernel gives
 * no live pid for (`xstage status`); never on a lock's path. Processes we may not
 * inspect (another user's, without privileges) are not seen. Empty where
 * /proc cannot be read.
 */
export function fdHolderPids(dev: bigint, ino: bigint): number[] {
  const [major, minor] = majorMinor(dev);
  const lockLine = new RegExp(
    `^lock:.*\\s(?:OFDLCK|FLOCK)\\s.*\\s0*${major.toString(16)}:0*${minor.toString(16)}:${ino}\\s`,
    'm',
  );
  const pids: number[] = [];
  let procs: string[];
  try {
    procs = readdirSync('/proc');
  } catch {
    return pids;
  }
  for (const p of procs) {
    if (!/^\d+$/.test(p)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue; // gone, or not ours to inspect
    }
    for (const fd of fds) {
      let info = '';
      try {
        const st = statSync(`/proc/${p}/fd/${fd}`, { bigint: true, throwIfNoEntry: false });
        if (!st || st.ino !== ino || st.dev !== dev) continue;
        info = readFileSync(`/proc/${p}/fdinfo/${fd}`, 'latin1');
      } catch {
        continue; // closed meanwhile, or not ours to inspect
      }
      if (lockLine.test(info)) {
        pids.push(Number(p));
        break;
      }
    }
  }
  return pids;
}
