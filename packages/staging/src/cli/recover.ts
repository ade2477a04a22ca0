/** `xstage recover`: reclaim the entries of a staging root whose writers are gone. */
import { resolve } from 'node:path';
import { StagingArea, type StagingAreaOptions } from '../area.js';
import type { RecoverProgress } from '../report.js';
import { errnoOf } from '../internal/fsutil.js';
import { bytes, EX_NOINPUT, EX_UNAVAILABLE, err, out, parse, UsageError } from './common.js';
import { connect, DEFAULT_PREFIX } from './etcd.js';
import { isArea } from './status.js';

export const recoverUsage = `Usage: xstage recover [--dry-run] [--json] [--force] <root>
       xstage recover --etcd <endpoints> [--dry-run] [--json] <root> [prefix]

Reclaims every entry of the staging area at <root> whose lock is free (its
writer died): deletes the staging directory, then the lock file. Live entries
(held by any process, including classic POSIX fcntl holders such as podman)
are never touched; symlinks are never followed; nothing outside <root> is
deleted. Both layouts are understood, per name: ours (lock-<id> + <id>/) and
containers/storage's (lock-<id> + temp-dir-<id>/, podman and buildah); a
name that fits neither, and a temp-dir-<id> without its lock file, is
skipped and listed, never deleted. Safe to run while other processes create
and recover. A progress line is shown on a terminal. <root> must hold the
.xstage-area marker that StagingArea.open leaves: a sweep deletes every
unlocked entry, so a mistyped path is refused (66) unless --force (a
containers/storage root has no marker: use --force; the rules above hold).

Options:
  --dry-run    report what would be reclaimed; delete nothing, create nothing
  --etcd <endpoints>
               for a root whose entry ownership lives in etcd (opened with
               StagingArea.open(root, { locks }) on every host; [prefix] is
               that EtcdLocks' key prefix, default /xlock/): an entry is
               reclaimed once its owner's lease is gone, whatever host it
               was on; entries of live owners on any host are left alone.
               Exit 69 when etcd cannot be reached.
  --force      sweep <root> even without the .xstage-area marker
  --json       print one JSON document: {"root","dryRun","scanned","removed",
               "live","bytesFreed","elapsedMs","errors":[{"path","code",
               "message"}...],"errorsOmitted","skipped":[{"path","reason"}
               ...],"skippedOmitted"} (the lists keep the first 1000)
  -h, --help   show this help

Exit status: 0 when every entry was handled; 1 when some failed (listed);
66 when <root> cannot be read or is not a staging area (or, with --etcd,
not one whose ownership is in etcd); 64 usage error; 69 when --etcd cannot
reach etcd.
`;

export async function cmdRecover(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    'dry-run': { type: 'boolean' },
    json: { type: 'boolean' },
    force: { type: 'boolean' },
    etcd: { type: 'string' },
  });
  if (values.help) return (out(recoverUsage), 0);
  const most = values.etcd === undefined ? 1 : 2;
  if (positionals.length < 1 || positionals.length > most)
    throw new UsageError(positionals.length === 0 ? 'missing <root>' : `unexpected argument '${positionals[most]}'`);
  if (values.etcd === undefined) return recoverRoot(positionals[0]!, values);
  if (values.force) throw new UsageError('--force does not apply to --etcd (the root must be a staging area)');
  const locks = await connect(values.etcd, positionals[1] ?? DEFAULT_PREFIX);
  if (!locks) return EX_UNAVAILABLE;
  try {
    return await recoverRoot(positionals[0]!, values, locks);
  } finally {
    await locks.close().catch(() => undefined);
  }
}

async function recoverRoot(
  given: string,
  values: { 'dry-run'?: boolean | undefined; json?: boolean | undefined; force?: boolean | undefined },
  locks?: NonNullable<StagingAreaOptions['locks']>,
): Promise<number> {
  const root = resolve(given);
  const dryRun = values['dry-run'] === true;
  let area: StagingArea;
  try {
    area = await StagingArea.open(root, { create: false, ...(locks ? { locks } : {}) });
  } catch (e) {
    err(`xstage: cannot read '${root}': ${(e as Error).message}\n`);
    return EX_NOINPUT;
  }
  if (values.force !== true && !isArea(root)) return EX_NOINPUT;
  const tty = process.stderr.isTTY === true;
  let last = 0;
  const onProgress = tty
    ? (p: RecoverProgress) => {
        const now = performance.now();
        if (now - last < 100) return;
        last = now;
        err(
          `\r\x1b[K${dryRun ? 'checking' : 'recovering'} ${root}: scanned ${p.scanned}, ${dryRun ? 'would remove' : 'removed'} ${p.removed}, live ${p.live}, errors ${p.errors}`,
        );
      }
    : undefined;
  const t0 = performance.now();
  let report;
  try {
    report = await area.recover({ dryRun, ...(onProgress ? { onProgress } : {}) });
  } catch (e) {
    if (tty) err('\r\x1b[K');
    err(`xstage: cannot read '${root}': ${(e as Error).message}\n`);
    return EX_NOINPUT;
  }
  const elapsedMs = Math.round((performance.now() - t0) * 10) / 10;
  if (tty) err('\r\x1b[K');
  if (values.json) {
    const errors = report.errors.map(({ path, error }) => ({ path, code: errnoOf(error) ?? null, message: error.message }));
    out(
      `${JSON.stringify({ root, dryRun, scanned: report.scanned, removed: report.removed, live: report.live, bytesFreed: report.bytesFreed, elapsedMs, errors, errorsOmitted: report.errorsOmitted, skipped: report.skipped, skippedOmitted: report.skippedOmitted })}\n`,
    );
  } else {
    out(
      `${root}: ${dryRun ? 'would remove' : 'removed'} ${report.removed} of ${report.scanned} ${report.scanned === 1 ? 'entry' : 'entries'} ` +
        `(${bytes(report.bytesFreed)}${dryRun ? '' : ' freed'}), ${report.live} live, ${report.errors.length + report.errorsOmitted} failed, ${elapsedMs} ms${dryRun ? ' (dry run: nothing changed)' : ''}\n`,
    );
    for (const { path, error } of report.errors) out(`  failed: ${path}: ${error.message}\n`);
    if (report.errorsOmitted > 0) out(`  failed: ${report.errorsOmitted} more (not listed)\n`);
    for (const { path, reason } of report.skipped) out(`  skipped: ${path}: ${reason}\n`);
    if (report.skippedOmitted > 0) out(`  skipped: ${report.skippedOmitted} more (not listed)\n`);
  }
  return report.errors.length + report.errorsOmitted > 0 ? 1 : 0;
}
