/**
 * Child processes for multi-process tests: a handshake (the child prints
 * `acquired` once it holds the lock, releases on stdin EOF), never a sleep,
 * and reaping in `finally` (SIGTERM, then SIGKILL, then wait).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));

/** A spawned child with a line reader on its stdout. */
export interface Child {
  proc: ChildProcess;
  /** Resolves with the next stdout line (rejects if the child exits first). */
  line(): Promise<string>;
  /** Ends stdin (the release signal) and waits for the child to exit; resolves its exit code. */
  finish(): Promise<number | null>;
  /** SIGTERM, then SIGKILL after 2 s, then wait. Idempotent. */
  reap(): Promise<void>;
}

const live = new Set<ChildProcess>();

export function start(command: string, args: string[], env?: NodeJS.ProcessEnv): Child {
  const proc = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'], ...(env ? { env: { ...process.env, ...env } } : {}) });
  live.add(proc);
  const exited = once(proc, 'exit').then(() => live.delete(proc));
  const lines: string[] = [];
  const waiters: { resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  const rl = createInterface({ input: proc.stdout! });
  rl.on('line', (l) => {
    const w = waiters.shift();
    if (w) w.resolve(l);
    else lines.push(l);
  });
  let closed = false;
  rl.on('close', () => {
    closed = true;
    for (const w of waiters.splice(0)) w.reject(new Error(`child ${proc.pid} closed stdout (exit ${proc.exitCode})`));
  });
  return {
    proc,
    line: () =>
      lines.length > 0
        ? Promise.resolve(lines.shift()!)
        : new Promise((resolve, reject) => {
            if (closed) reject(new Error(`child ${proc.pid} closed stdout`));
            else waiters.push({ resolve, reject });
          }),
    async finish() {
      proc.stdin!.end();
      if (proc.exitCode === null && proc.signalCode === null) await exited;
      return proc.exitCode;
    },
    async reap() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.stdin!.destroy();
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Starts test/fixtures/holder.mjs (see its header) and waits for its first line. */
export async function holder(
  method: string,
  path: string,
  options?: object,
  env?: NodeJS.ProcessEnv,
): Promise<{ child: Child; first: string }> {
  const child = start(
    process.execPath,
    [fixture('holder.mjs'), method, path, ...(options ? [JSON.stringify(options)] : [])],
    env,
  );
  const first = await child.line();
  return { child, first };
}

/** Starts a python3 classic-POSIX `lockf` holder and waits for its first line. */
export async function pyLockf(path: string, mode: 'hold' | 'try' = 'hold'): Promise<{ child: Child; first: string }> {
  const child = start('python3', [fixture('py_lockf.py'), path, mode]);
  const first = await child.line();
  return { child, first };
}

/** Reaps every child still alive; call from afterEach. */
export async function reapAll(): Promise<void> {
  await Promise.all(
    [...live].map(async (proc) => {
      proc.kill('SIGKILL');
      if (proc.exitCode === null && proc.signalCode === null) await once(proc, 'exit');
    }),
  );
}
