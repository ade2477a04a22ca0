/** Running the `xstage` command line as a real child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The `xstage` executable of the workspace. */
export const BIN = fileURLToPath(new URL('../../packages/staging/bin/xstage.js', import.meta.url));

/** How an `xstage` run ended, with everything it printed. */
export interface XstageResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

const running = new Set<ChildProcess>();

/** Starts `node xstage.js ...args`; `done` resolves once it exited and its output is read. */
export function xstageStart(args: string[]): { proc: ChildProcess; done: Promise<XstageResult> } {
  const t0 = performance.now();
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const done = new Promise<XstageResult>((resolve, reject) => {
    proc.once('error', reject);
    // 'close', not 'exit': the output is all read by then.
    proc.once('close', (code, signal) => {
      running.delete(proc);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
  return { proc, done };
}

/** Runs `xstage ...args` to the end. */
export const xstage = (...args: string[]): Promise<XstageResult> => xstageStart(args).done;

/** SIGKILLs every `xstage` still running; call from afterEach. */
export function killXstage(): void {
  for (const p of running) p.kill('SIGKILL');
  running.clear();
}
