/** `xstage status`: who holds a lock file, or every lock of a staging root. */
import { existsSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { AREA_MARKER, StagingArea, type StagingEntry } from '../area.js';
import { probeLock } from '../internal/probe.js';
import { errnoOf } from '../internal/fsutil.js';
import { EX_NOINPUT, err, holdersText, holderText, out, ownerFields, parse, seconds, UsageError } from './common.js';
import { statusEtcd } from './etcd.js';

export const statusUsage = `Usage: xstage status [--json] [--force] <path|root>
       xstage status --etcd <endpoints> [--json] [prefix]

For a lock file: whether it is held, and by whom (pid, host, age, backend).
For a directory (a staging area's root): every entry with its lock's state.
Changes nothing: the kernel is asked who holds each lock (F_GETLK and, on
Linux, /proc/locks); no lock is taken, no file is created, no owner record
is rewritten, and holders are not disturbed. A directory must be a staging
area (it holds the .xstage-area marker that StagingArea.open leaves) unless
--force.

States: held (a live holder, exclusive or shared), free (nobody holds it:
for a staging entry, stale), missing (no lock file: for a staging entry, a
stale directory), unknown (the probe failed). For a free lock, pid/host/age
describe the last holder its owner record names.

Holders: every lock the kernel holds on the file (Linux /proc/locks), shared
or exclusive: classic POSIX fcntl locks (podman, buildah, Python lockf) and
flock(2) locks (flock(1), Python filelock, --flock) with their pid; our OFD
locks without one (the kernel does not give it: F_GETLK callers such as Go
see pid -1), named instead by the owner record we write into the file. A
record is only shown as the holder while the kernel still sees it hold the
lock.

Options:
  --json       print one JSON document:
                 a lock file: {"kind":"lock","path","state","pid","hostname",
                   "backend","age","startedAt","shared","holders"}
                 a root: {"kind":"root","root","entries":[{"id","path",
                   "layout","lockPath","hasDir","state","pid","hostname",
                   "backend","age","startedAt","shared","holders"}...],
                   "held","stale","unknown"}
               (age in ms, startedAt in ms since the epoch; shared and
               holders [{"kind","shared","pid"}] only for a held lock where
               the kernel lists its locks; null when unknown)
  --force      list a directory without the .xstage-area marker (a
               containers/storage staging root: both layouts are listed)
  --etcd <endpoints>
               list the locks held in etcd under [prefix] (default /xlock/;
               a staging area's EtcdLocks prefix shows its entries' owners
               on every host): name, pid, host, held for, fencing token,
               waiters. With --json: {"kind":"etcd","endpoints","prefix",
               "locks":[{"name","key","pid","hostname","startedAt",
               "fencingToken","waiting"}...]}. Exit 69 when etcd cannot be
               reached.
  -h, --help   show this help

A file is always reported as a lock file (another program's, such as
podman's storage.lock, shows as held or free without an owner of ours);
write 'root/' to say that a staging root is meant.

Exit status: 0; 66 when the path cannot be read, its directory does not
exist, it is a directory that is not a staging area, or it is a file given
as 'root/'; 64 usage error; 69 when --etcd cannot reach etcd.
`;

export async function cmdStatus(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    json: { type: 'boolean' },
    force: { type: 'boolean' },
    etcd: { type: 'string' },
  });
  if (values.help) return (out(statusUsage), 0);
  if (values.etcd !== undefined) {
    if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
    return statusEtcd(values.etcd, positionals[0], values.json === true);
  }
  if (positionals.length !== 1)
    throw new UsageError(positionals.length === 0 ? 'missing <path|root>' : `unexpected argument '${positionals[1]}'`);
  const given = positionals[0]!;
  const path = resolve(given);
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if (errnoOf(e) !== 'ENOENT') {
      err(`xstage: cannot read '${path}': ${(e as Error).message}\n`);
      return EX_NOINPUT;
    }
  }
  if (st?.isDirectory()) return values.force === true || isArea(path) ? statusRoot(path, values.json === true) : EX_NOINPUT;
  if (st && /\/\.?$/.test(given)) {
    // `root/`: a staging root is expected, as `recover` expects one.
    err(`xstage: '${path}' is not a directory (a staging root was expected)\n`);
    return EX_NOINPUT;
  }
  if (!st) {
    // A missing lock file is an answer only where its directory exists: a
    // mistyped directory must not read as "missing".
    const dir = dirname(path);
    const dirSt = await lstat(dir).catch(() => null);
    if (!dirSt?.isDirectory()) {
      err(`xstage: cannot read '${path}': ${dirSt ? 'its parent is not a directory' : `no such directory '${dir}'`}\n`);
      return EX_NOINPUT;
    }
  }

  const probe = st ? await probeLock(path) : { state: 'missing' as const, owner: null };
  if (values.json) {
    out(`${JSON.stringify({ kind: 'lock', path, state: probe.state, ...ownerFields(probe.owner) })}\n`);
    return 0;
  }
  const o = probe.owner;
  const backend = o?.backend ? ` (${o.backend} lock)` : '';
  if (probe.state === 'held') {
    const mode = o?.shared === true ? ' shared' : o?.shared === false ? ' exclusively' : '';
    out(
      `${path}: held${mode}${holderText(o)}${backend}${o?.age !== undefined ? `, for ${seconds(o.age)}` : ''}${holdersText(o)}\n`,
    );
  } else if (probe.state === 'free') {
    // A free file with content but no record of ours: another program's lock
    // file (podman's storage.lock keeps a token there), or not a lock file.
    const note = o?.pid
      ? ` (last held${holderText(o)}, ${seconds(o.age)} ago)`
      : st?.size
        ? ' (no owner record of ours in it)'
        : '';
    out(`${path}: free${note}\n`);
  } else if (probe.state === 'missing') out(`${path}: missing (no lock file)\n`);
  else out(`${path}: unknown (${probe.error?.message ?? 'the probe failed'})\n`);
  return 0;
}

/** Whether `root` holds the marker of a staging area; says why not on stderr. */
export function isArea(root: string): boolean {
  if (existsSync(join(root, AREA_MARKER))) return true;
  err(`xstage: '${root}' is not a staging area (no ${AREA_MARKER} marker, which StagingArea.open leaves)\n`);
  return false;
}

async function statusRoot(root: string, json: boolean): Promise<number> {
  const counts = { held: 0, stale: 0, unknown: 0 };
  const count = (e: StagingEntry) => {
    if (e.state === 'held') counts.held++;
    else if (e.state === 'unknown') counts.unknown++;
    else counts.stale++;
  };
  const area = await StagingArea.open(root, { create: false });
  if (json) {
    // Streamed, so a root of 100k entries never sits in memory.
    out(`{"kind":"root","root":${JSON.stringify(root)},"entries":[`);
    let first = true;
    try {
      for await (const e of area.list()) {
        count(e);
        out(
          `${first ? '' : ','}${JSON.stringify({ id: e.id, path: e.path, layout: e.layout, lockPath: e.lockPath, hasDir: e.hasDir, state: e.state, ...ownerFields(e.owner) })}`,
        );
        first = false;
      }
    } finally {
      out(`],"held":${counts.held},"stale":${counts.stale},"unknown":${counts.unknown}}\n`);
    }
    return 0;
  }
  out(`${root}: staging area\n`);
  let header = false;
  for await (const e of area.list()) {
    if (!header) {
      out(
        `  ${'STATE'.padEnd(8)} ${'ID'.padEnd(14)} ${'PID'.padEnd(8)} ${'HOST'.padEnd(12)} ${'BACKEND'.padEnd(8)} ${'AGE'.padEnd(8)} DIR\n`,
      );
      header = true;
    }
    count(e);
    const o = e.owner;
    const note =
      e.state === 'held'
        ? ''
        : e.state === 'unknown'
          ? `  (${e.error?.message ?? 'probe failed'})`
          : e.state === 'missing' && e.layout === 'containers-storage'
            ? '  stale? (a temp-dir without its lock file: recover leaves it, see docs/interop.md)'
            : '  stale';
    out(
      `  ${e.state.padEnd(8)} ${e.id.padEnd(14)} ${String(o?.pid ?? '-').padEnd(8)} ${(o?.hostname ?? '-').padEnd(12)} ` +
        `${(o?.backend ?? '-').padEnd(8)} ${(o?.age !== undefined ? seconds(o.age) : '-').padEnd(8)} ${e.hasDir ? 'yes' : 'no'}${note}\n`,
    );
  }
  const total = counts.held + counts.stale + counts.unknown;
  out(
    `${total} ${total === 1 ? 'entry' : 'entries'}: ${counts.held} held, ${counts.stale} stale${counts.unknown ? `, ${counts.unknown} unknown` : ''}\n`,
  );
  return 0;
}
