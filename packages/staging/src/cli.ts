/**
 * `xstage`: the command line of `@x/staging` (bin/xstage.js imports this
 * module, which runs at once). Commands: `run`, `status`, `recover`, `demo`,
 * `help`; see {@link usage} and each command's `--help`.
 *
 * Exit codes follow sysexits(3) and flock(1): 64 usage error, 66 an input
 * path that cannot be read or opened, 73 a lock file that cannot be created,
 * 75 busy / timed out (EX_TEMPFAIL), 126 / 127 a command that cannot be
 * executed / is not found, 70 an internal error.
 */
import { isLockError, lock, tryLock, type FileLock, type LockOwner } from '@x/core';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AREA_MARKER, StagingArea, type StagingEntry } from './area.js';
import type { RecoverProgress } from './sweep.js';
import { demoWorker, runDemo } from './demo.js';
import { errnoOf } from './internal/fsutil.js';
import { probeLock } from './internal/probe.js';

const EX_USAGE = 64;
const EX_NOINPUT = 66;
const EX_SOFTWARE = 70;
const EX_OSERR = 71;
const EX_CANTCREAT = 73;
const EX_TEMPFAIL = 75;
const EX_NOEXEC = 126;
const EX_NOTFOUND = 127;

/** A usage error: the message goes to stderr with a pointer to `--help`, exit 64. */
class UsageError extends Error {}

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

const help = { help: { type: 'boolean', short: 'h' } } as const;

/** The top-level help. */
export const usage = `Usage: xstage <command> [options] [arguments]

Commands:
  run [--wait] [--timeout <seconds>] <lockpath> -- <command...>
                 hold a lock while a command runs (like flock(1))
  status [--json] <path|root>
                 who holds a lock file, or every lock of a staging root
  recover [--dry-run] [--json] [--force] <root>
                 reclaim the entries of a staging root whose writers are gone
  demo [--workers <n>] [--artifacts <n>] [--keep]
                 staging area, concurrent writers, a SIGKILL, recovery, checks
  help [command] this text, or a command's

Options come before positional arguments. \`xstage <command> --help\` shows a
command's options and exit codes.
`;

const usages: Record<string, string> = {
  run: `Usage: xstage run [--wait] [--timeout <seconds>] <lockpath> -- <command> [args...]

Holds an exclusive lock on <lockpath> while <command> runs, like flock(1).
The lock file is created when missing (its directory must exist) and kept
afterwards; it carries an owner record (pid, host) that \`xstage status\`
shows. The lock is released when the command exits. SIGTERM and SIGHUP are
forwarded to the command; SIGINT and SIGQUIT reach it from the terminal.

Options:
  --wait               wait while another process holds the lock
  --timeout <seconds>  wait at most this long (decimals allowed, e.g. 0.5;
                       implies --wait; 0 means do not wait)
  -h, --help           show this help

Exit status:
  the command's own exit status (128+N when a signal N killed it)
  75   the lock is held by someone else, or the wait timed out
  64   usage error
  66   the lock file cannot be opened (73: cannot be created, EROFS/ENOSPC)
  126  the command cannot be executed
  127  the command was not found
`,
  status: `Usage: xstage status [--json] <path|root>

For a lock file: whether it is held, and by whom (pid, host, age, backend).
For a directory (a staging area's root): every entry with its lock's state.
Changes nothing: a lock is probed with a shared lock taken without creating
the file (a lock file that vanishes is reported missing), so no file is
created, no owner record is rewritten, and holders are not disturbed. A
directory must be a staging area (it holds the .xstage-area marker that
StagingArea.open leaves).

States: held (a live holder), free (nobody holds it: for a staging entry,
stale), missing (no lock file: for a staging entry, a stale directory),
unknown (the probe failed). For a free lock, pid/host/age describe the last
holder its owner record names.

Options:
  --json       print one JSON document:
                 a lock file: {"kind":"lock","path","state","pid","hostname",
                   "backend","age","startedAt"}
                 a root: {"kind":"root","root","entries":[{"id","path",
                   "lockPath","hasDir","state","pid","hostname","backend",
                   "age","startedAt"}...],"held","stale","unknown"}
               (age in ms, startedAt in ms since the epoch; null when unknown)
  -h, --help   show this help

Exit status: 0; 66 when the path cannot be read or is a directory that is
not a staging area; 64 usage error.
`,
  recover: `Usage: xstage recover [--dry-run] [--json] [--force] <root>

Reclaims every entry of the staging area at <root> whose lock is free (its
writer died): deletes the staging directory, then the lock file. Live entries
(held by any process, including classic POSIX fcntl holders such as podman)
are never touched; symlinks are never followed; nothing outside <root> is
deleted. Safe to run while other processes create and recover. A progress
line is shown on a terminal. <root> must hold the .xstage-area marker that
StagingArea.open leaves: a sweep deletes every unlocked entry, so a mistyped
path is refused (66) unless --force.

Options:
  --dry-run    report what would be reclaimed; delete nothing, create nothing
  --force      sweep <root> even without the .xstage-area marker
  --json       print one JSON document: {"root","dryRun","scanned","removed",
               "live","bytesFreed","elapsedMs","errors":[{"path","code",
               "message"}...]}
  -h, --help   show this help

Exit status: 0 when every entry was handled; 1 when some failed (listed);
66 when <root> cannot be read or is not a staging area; 64 usage error.
`,
  demo: `Usage: xstage demo [--workers <n>] [--artifacts <n>] [--keep]

Builds a staging area in a temporary directory; runs worker processes that
stage and commit artifacts concurrently while recovery sweeps run; SIGKILLs
one worker mid-write; recovers; verifies that every committed artifact is
intact (sha256), that the killed worker's entry was reclaimed, and that a live
entry held during every sweep survived. Prints a report with timings.

Options:
  --workers <n>    concurrent committing workers (default 4)
  --artifacts <n>  artifacts each worker commits (default 5)
  --keep           keep the temporary directory (its path is printed)
  -h, --help       show this help

Exit status: 0 when every check passed, 1 otherwise.
`,
};

function parse<T extends Options>(args: string[], options: T) {
  try {
    return parseArgs({ args, options: { ...help, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    if (errnoOf(err)?.startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message);
    throw err;
  }
}

const out = (text: string): void => void process.stdout.write(text);
const err = (text: string): void => void process.stderr.write(text);

/** `run`: options before the lock path; the command after `--` (or, flock-style, right after the lock path). */
async function cmdRun(args: string[]): Promise<number> {
  // Options end at the first non-option, which is the lock path. The command
  // follows it, after `--` or (flock-style) directly; a `--` further on
  // belongs to the command (`xstage run L git log -- file`).
  let i = 0;
  while (i < args.length && args[i] !== '--' && args[i]!.startsWith('-') && args[i] !== '-') {
    if (args[i] === '--timeout') i++;
    i++;
  }
  let head: string[];
  let command: string[];
  if (args[i] === '--') {
    // `--` before the lock path: `run [options] -- <lockpath> ...` is not our
    // syntax; keep the historical reading (everything before `--` is ours).
    head = args.slice(0, i);
    command = args.slice(i + 1);
  } else if (args[i + 1] === '--') {
    head = args.slice(0, i + 1);
    command = args.slice(i + 2);
  } else {
    head = args.slice(0, i + 1);
    command = args.slice(i + 1);
  }
  const { values, positionals } = parse(head, { wait: { type: 'boolean' }, timeout: { type: 'string' } });
  if (values.help) return (out(usages.run!), 0);
  if (positionals.length !== 1)
    throw new UsageError(
      positionals.length === 0 ? 'missing <lockpath>' : `unexpected argument '${positionals[1]}' (put the command after --)`,
    );
  if (command.length === 0) throw new UsageError('missing the command to run (after --)');
  let timeoutMs = Infinity;
  if (values.timeout !== undefined) {
    if (!/^(\d+\.?\d*|\.\d+)$/.test(values.timeout))
      throw new UsageError(`--timeout expects a number of seconds (decimals allowed), got '${values.timeout}'`);
    timeoutMs = Number(values.timeout) * 1000;
    if (!Number.isFinite(timeoutMs)) throw new UsageError(`--timeout is too large: '${values.timeout}'`);
  }
  const wait = values.wait === true || values.timeout !== undefined;
  const path = resolve(positionals[0]!);

  let held: FileLock;
  try {
    held = wait ? await lock(path, { timeout: timeoutMs }) : await tryLock(path);
  } catch (e) {
    if (isLockError(e, 'ELOCKED')) {
      err(`xstage: '${path}' is locked${holderText(e.owner)}\n`);
      return EX_TEMPFAIL;
    }
    if (isLockError(e, 'ETIMEDOUT')) {
      err(`xstage: timed out after ${values.timeout}s waiting for '${path}'\n`);
      return EX_TEMPFAIL;
    }
    err(`xstage: cannot lock '${path}': ${(e as Error).message}\n`);
    const code = errnoOf(e);
    if (code === 'EROFS' || code === 'ENOSPC') return EX_CANTCREAT;
    if (code === 'EMFILE' || code === 'ENFILE' || code === 'ENOMEM') return EX_OSERR;
    return EX_NOINPUT;
  }

  try {
    return await runChild(command);
  } finally {
    await held.release();
  }
}

/** Runs the command with inherited stdio; resolves its exit status the shell way. */
function runChild(command: string[]): Promise<number> {
  return new Promise((resolveExit) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit' });
    const forward = (signal: NodeJS.Signals) => () => void child.kill(signal);
    const handlers: [NodeJS.Signals, () => void][] = [
      ['SIGTERM', forward('SIGTERM')],
      ['SIGHUP', forward('SIGHUP')],
      // The terminal sends these to the whole foreground group: the command has them already.
      ['SIGINT', () => undefined],
      ['SIGQUIT', () => undefined],
    ];
    for (const [signal, handler] of handlers) process.on(signal, handler);
    const done = (status: number) => {
      for (const [signal, handler] of handlers) process.off(signal, handler);
      resolveExit(status);
    };
    child.once('error', (e) => {
      const code = errnoOf(e);
      err(`xstage: cannot run '${command[0]}': ${code === 'ENOENT' ? 'command not found' : e.message}\n`);
      done(code === 'ENOENT' ? EX_NOTFOUND : EX_NOEXEC);
    });
    child.once('exit', (code, signal) => {
      if (code !== null) done(code);
      else done(128 + (signal ? (osSignals[signal] ?? 0) : 0));
    });
  });
}

const osSignals: Record<string, number> = osConstants.signals;

function seconds(ms: number | undefined): string {
  if (ms === undefined) return '?';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${Math.floor(s % 60)}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h${m % 60}m` : `${Math.floor(h / 24)}d${h % 24}h`;
}

function holderText(owner: LockOwner | null | undefined): string {
  if (!owner?.pid) return '';
  return ` by pid ${owner.pid}${owner.hostname ? ` on ${owner.hostname}` : ''}`;
}

/** The owner fields of the JSON schema; null when unknown. */
function ownerFields(owner: LockOwner | null) {
  return {
    pid: owner?.pid ?? null,
    hostname: owner?.hostname ?? null,
    backend: owner?.backend ?? null,
    age: owner?.age ?? null,
    startedAt: owner?.startedAt ?? null,
  };
}

async function cmdStatus(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: 'boolean' } });
  if (values.help) return (out(usages.status!), 0);
  if (positionals.length !== 1)
    throw new UsageError(positionals.length === 0 ? 'missing <path|root>' : `unexpected argument '${positionals[1]}'`);
  const path = resolve(positionals[0]!);
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if (errnoOf(e) !== 'ENOENT') {
      err(`xstage: cannot read '${path}': ${(e as Error).message}\n`);
      return EX_NOINPUT;
    }
  }
  if (st?.isDirectory()) return isArea(path) ? statusRoot(path, values.json === true) : EX_NOINPUT;

  const probe = st ? await probeLock(path) : { state: 'missing' as const, owner: null };
  if (values.json) {
    out(`${JSON.stringify({ kind: 'lock', path, state: probe.state, ...ownerFields(probe.owner) })}\n`);
    return 0;
  }
  const o = probe.owner;
  const backend = o?.backend ? ` (${o.backend} lock)` : '';
  if (probe.state === 'held')
    out(`${path}: held${holderText(o)}${backend}${o?.age !== undefined ? `, for ${seconds(o.age)}` : ''}\n`);
  else if (probe.state === 'free') out(`${path}: free${o?.pid ? ` (last held${holderText(o)}, ${seconds(o.age)} ago)` : ''}\n`);
  else if (probe.state === 'missing') out(`${path}: missing (no lock file)\n`);
  else out(`${path}: unknown (${probe.error?.message ?? 'the probe failed'})\n`);
  return 0;
}

/** Whether `root` holds the marker of a staging area; says why not on stderr. */
function isArea(root: string): boolean {
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
          `${first ? '' : ','}${JSON.stringify({ id: e.id, path: e.path, lockPath: e.lockPath, hasDir: e.hasDir, state: e.state, ...ownerFields(e.owner) })}`,
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
    const note = e.state === 'held' ? '' : e.state === 'unknown' ? `  (${e.error?.message ?? 'probe failed'})` : '  stale';
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

function bytes(n: number): string {
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

async function cmdRecover(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    'dry-run': { type: 'boolean' },
    json: { type: 'boolean' },
    force: { type: 'boolean' },
  });
  if (values.help) return (out(usages.recover!), 0);
  if (positionals.length !== 1)
    throw new UsageError(positionals.length === 0 ? 'missing <root>' : `unexpected argument '${positionals[1]}'`);
  const root = resolve(positionals[0]!);
  const dryRun = values['dry-run'] === true;
  let area: StagingArea;
  try {
    area = await StagingArea.open(root, { create: false });
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
      `${JSON.stringify({ root, dryRun, scanned: report.scanned, removed: report.removed, live: report.live, bytesFreed: report.bytesFreed, elapsedMs, errors })}\n`,
    );
  } else {
    out(
      `${root}: ${dryRun ? 'would remove' : 'removed'} ${report.removed} of ${report.scanned} ${report.scanned === 1 ? 'entry' : 'entries'} ` +
        `(${bytes(report.bytesFreed)}${dryRun ? '' : ' freed'}), ${report.live} live, ${report.errors.length} failed, ${elapsedMs} ms${dryRun ? ' (dry run: nothing changed)' : ''}\n`,
    );
    for (const { path, error } of report.errors) out(`  failed: ${path}: ${error.message}\n`);
  }
  return report.errors.length > 0 ? 1 : 0;
}

async function cmdDemo(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    workers: { type: 'string' },
    artifacts: { type: 'string' },
    keep: { type: 'boolean' },
  });
  if (values.help) return (out(usages.demo!), 0);
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const count = (name: string, v: string | undefined, dflt: number, max: number): number => {
    if (v === undefined) return dflt;
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max)
      throw new UsageError(`--${name} expects an integer from 1 to ${max}, got '${v}'`);
    return Number(v);
  };
  return runDemo({
    workers: count('workers', values.workers, 4, 64),
    artifacts: count('artifacts', values.artifacts, 5, 1000),
    keep: values.keep === true,
  });
}

const commands: Record<string, (args: string[]) => Promise<number>> = {
  run: cmdRun,
  status: cmdStatus,
  recover: cmdRecover,
  demo: cmdDemo,
  // The demo's worker processes (not for humans).
  '__demo-worker': demoWorker,
  help: async (args) => {
    const topic = args[0];
    if (topic !== undefined && usages[topic] === undefined) throw new UsageError(`unknown command '${topic}'`);
    out(topic === undefined ? usage : usages[topic]!);
    return 0;
  },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === '--help' || name === '-h') return (out(usage), 0);
  if (name === undefined) {
    err(usage);
    return EX_USAGE;
  }
  const command = commands[name];
  if (!command) {
    err(`xstage: unknown command '${name}'\n${usage}`);
    return EX_USAGE;
  }
  try {
    return await command(args);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`xstage ${name}: ${e.message}\nRun 'xstage ${name} --help' for usage.\n`);
      return EX_USAGE;
    }
    err(`xstage ${name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return EX_SOFTWARE;
  }
}

process.exitCode = await main(process.argv.slice(2));
