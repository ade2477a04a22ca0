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
import { cmdRecover, recoverUsage } from './cli/recover.js';
import { cmdRun, runUsage } from './cli/run.js';
import { cmdStatus, statusUsage } from './cli/status.js';
import { isLockError } from '@x/core';
import { EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE, err, out, parse, UsageError } from './cli/common.js';
import { demoWorker, runDemo } from './demo.js';

/** The top-level help. */
export const usage = `Usage: xstage <command> [options] [arguments]

Commands:
  run [--wait] [--timeout <seconds>] <lockpath> -- <command...>
                 hold a lock while a command runs (like flock(1))
  run --etcd <endpoints> [--wait] [--timeout <seconds>] <name> -- <command...>
                 the same with the lock in etcd, across hosts
  status [--json] <path|root>
                 who holds a lock file, or every lock of a staging root
  status --etcd <endpoints> [--json] [prefix]
                 every lock held in etcd under a prefix
  recover [--dry-run] [--json] [--force] <root>
                 reclaim the entries of a staging root whose writers are gone
  recover --etcd <endpoints> [--dry-run] [--json] <root> [prefix]
                 the same for a root whose entry ownership is in etcd
  demo [--workers <n>] [--artifacts <n>] [--keep]
                 staging area, concurrent writers, a SIGKILL, recovery, checks
  help [command] this text, or a command's

Options come before positional arguments. \`xstage <command> --help\` shows a
command's options and exit codes.
`;

const usages: Record<string, string> = {
  run: runUsage,
  status: statusUsage,
  recover: recoverUsage,
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
    // Kernel locks unavailable (no addon for this platform): say why and what to do, no stack.
    if (isLockError(e, 'ENOTSUP')) {
      err(`xstage ${name}: ${e.message}\n`);
      return EX_UNAVAILABLE;
    }
    err(`xstage ${name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return EX_SOFTWARE;
  }
}

process.exitCode = await main(process.argv.slice(2));
