/** `xstage run`: hold a lock while a command runs (like flock(1)). */
import { isLockError, lock, tryLock, type FileLock } from '@x/core';
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { resolve } from 'node:path';
import {
  EX_CANTCREAT,
  EX_NOEXEC,
  EX_NOINPUT,
  EX_NOTFOUND,
  EX_OSERR,
  EX_TEMPFAIL,
  EX_UNAVAILABLE,
  err,
  out,
  parse,
  UsageError,
} from './common.js';
import { errnoOf } from '../internal/fsutil.js';
import { runEtcd } from './etcd.js';

export const runUsage = `Usage: xstage run [--wait] [--timeout <seconds>] [--flock] [--close] <lockpath> -- <command> [args...]
       xstage run --etcd <endpoints> [--wait] [--timeout <seconds>] <name> -- <command> [args...]

Holds an exclusive lock on <lockpath> while <command> runs, like flock(1).
The lock file is created when missing (its directory must exist) and kept
afterwards; an empty lock file (or one of ours) gets an owner record (pid,
host) that \`xstage status\` shows; another program's lock file is never
written. SIGTERM and SIGHUP are forwarded to the command; SIGINT and
SIGQUIT reach it from the terminal.

The command inherits the locked descriptor as fd 3 (its number is in
XSTAGE_LOCK_FD), so the lock lives as long as the command, even if xstage
itself is killed (SIGKILL included); it is released when both xstage and
the command (and any process the command passed fd 3 on to) are gone. The
command may close fd 3 (\`exec 3>&-\`), e.g. before starting a daemon that
must not keep the lock: then the lock lasts as long as xstage. With
--close the command does not get the descriptor at all.

Differences from flock(1):
  - the lock is an OFD (fcntl) lock, plus a flock lock with --flock: it
    excludes podman/buildah and Python lockf; flock(1) takes only a flock
    lock, which does not exclude them;
  - without --wait or --timeout we do not wait (flock(1) waits unless -n);
  - a busy lock or a timed-out wait exits 75 (flock(1): 1, or -E);
  - the inherited descriptor is fd 3 (flock(1) passes the one it opened);
  - exclusive locks only (flock(1) -s is shared).

Options:
  --wait               wait while another process holds the lock
  --timeout <seconds>  wait at most this many SECONDS (decimals allowed,
                       e.g. 0.5; implies --wait; 0 means do not wait; the
                       @x/core API's \`timeout\` option is in milliseconds)
  --flock              take a flock(2) lock too (besides the fcntl/OFD one):
                       to join locks that flock(1) scripts, nftban or Python
                       filelock hold (Linux keeps the two kinds apart: the
                       default excludes podman/buildah and Python lockf,
                       --flock excludes flock(1) as well)
  --close              do not pass the locked descriptor to the command
                       (like flock -o): the lock then lasts only as long
                       as xstage
  --etcd <endpoints>   hold the lock <name> in etcd instead of a lock file
                       (comma-separated client URLs; keys under /xlock/;
                       needs @x/etcd). Waiting is first come, first served
                       across hosts; the command gets SIGTERM if the lock is
                       lost (etcd cut off past the lease TTL). Exit 69 when
                       etcd cannot be reached.
  -h, --help           show this help

Exit status:
  the command's own exit status (128+N when a signal N killed it)
  75   the lock is held by someone else, or the wait timed out
  64   usage error
  66   the lock file cannot be opened (73: cannot be created, EROFS/ENOSPC)
  126  the command cannot be executed
  127  the command was not found
`;

/** `run`: options before the lock path; the command after `--` (or, flock-style, right after the lock path). */
export async function cmdRun(args: string[]): Promise<number> {
  // Options end at the first non-option, which is the lock path. The command
  // follows it, after `--` or (flock-style) directly; a `--` further on
  // belongs to the command (`xstage run L git log -- file`).
  let i = 0;
  while (i < args.length && args[i] !== '--' && args[i]!.startsWith('-') && args[i] !== '-') {
    if (args[i] === '--timeout' || args[i] === '--etcd') i++;
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
  const { values, positionals } = parse(head, {
    wait: { type: 'boolean' },
    timeout: { type: 'string' },
    flock: { type: 'boolean' },
    close: { type: 'boolean' },
    etcd: { type: 'string' },
  });
  if (values.help) return (out(runUsage), 0);
  if (positionals.length !== 1)
    throw new UsageError(
      positionals.length === 0 ? 'missing <lockpath>' : `unexpected argument '${positionals[1]}' (put the command after --)`,
    );
  if (command.length === 0) throw new UsageError('missing the command to run (after --)');
  if (args[i] !== '--' && command[0]!.startsWith('-')) {
    // `run L --timeout 5 -- cmd`: an option after the lock path, caught before the lock is taken.
    throw new UsageError(`option '${command[0]}' after <lockpath>: options come before it`);
  }
  let timeoutMs = Infinity;
  if (values.timeout !== undefined) {
    if (!/^(\d+\.?\d*|\.\d+)$/.test(values.timeout))
      throw new UsageError(`--timeout expects a number of seconds (decimals allowed), got '${values.timeout}'`);
    timeoutMs = Number(values.timeout) * 1000;
    if (!Number.isFinite(timeoutMs)) throw new UsageError(`--timeout is too large: '${values.timeout}'`);
  }
  const wait = values.wait === true || values.timeout !== undefined;
  if (values.etcd !== undefined) {
    if (values.flock === true || values.close === true)
      throw new UsageError('--etcd takes no lock file: --flock and --close do not apply');
    const r = {
      endpoints: values.etcd,
      name: positionals[0]!,
      wait,
      timeoutMs,
      timeoutText: values.timeout,
      command,
      runChild: (cmd: string[], stop: AbortSignal) => runChild(cmd, undefined, stop),
    };
    return runEtcd(r);
  }
  const path = resolve(positionals[0]!);

  let held: FileLock;
  try {
    const backend = values.flock === true ? 'flock' : 'auto';
    held = wait ? await lock(path, { backend, timeout: timeoutMs }) : await tryLock(path, { backend });
  } catch (e) {
    if (isLockError(e, 'ELOCKED')) {
      // @x/core's message names the holder: '<path>' is locked by pid N on host (kernel, held 3.2 s).
      err(`xstage: ${e.message.replace(/^ELOCKED: /, '')}\n`);
      return EX_TEMPFAIL;
    }
    if (isLockError(e, 'ETIMEDOUT')) {
      err(`xstage: timed out after ${values.timeout}s waiting for '${path}'\n`);
      return EX_TEMPFAIL;
    }
    err(`xstage: cannot lock '${path}': ${(e as Error).message}\n`);
    if (isLockError(e, 'ENOTSUP')) return EX_UNAVAILABLE;
    const code = errnoOf(e);
    if (code === 'EROFS' || code === 'ENOSPC') return EX_CANTCREAT;
    if (code === 'EMFILE' || code === 'ENFILE' || code === 'ENOMEM') return EX_OSERR;
    return EX_NOINPUT;
  }

  try {
    return await runChild(command, values.close === true ? undefined : held.fd);
  } finally {
    await held.release();
  }
}

/** The child's descriptor number of the inherited lock (Node's spawn puts `stdio[3]` there). */
const LOCK_FD = 3;

/**
 * Runs the command with inherited stdio and, when `lockFd` is given, the
 * locked descriptor as its fd 3: an OFD or flock lock belongs to the open
 * file description, so the child's copy keeps it held if we die. Aborting
 * `stop` sends it SIGTERM. Resolves the command's exit status the shell way.
 */
function runChild(command: string[], lockFd: number | undefined, stop?: AbortSignal): Promise<number> {
  return new Promise((resolveExit) => {
    const child =
      lockFd === undefined
        ? spawn(command[0]!, command.slice(1), { stdio: 'inherit' })
        : spawn(command[0]!, command.slice(1), {
            stdio: ['inherit', 'inherit', 'inherit', lockFd],
            env: { ...process.env, XSTAGE_LOCK_FD: String(LOCK_FD) },
          });
    const forward = (signal: NodeJS.Signals) => () => void child.kill(signal);
    const onStop = forward('SIGTERM');
    stop?.addEventListener('abort', onStop, { once: true });
    const handlers: [NodeJS.Signals, () => void][] = [
      ['SIGTERM', forward('SIGTERM')],
      ['SIGHUP', forward('SIGHUP')],
      // The terminal sends these to the whole foreground group: the command has them already.
      ['SIGINT', () => undefined],
      ['SIGQUIT', () => undefined],
    ];
    for (const [signal, handler] of handlers) process.on(signal, handler);
    const done = (status: number) => {
      stop?.removeEventListener('abort', onStop);
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
