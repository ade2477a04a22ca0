/**
 * Children of the staging lock-file race tests (test/fixtures/staging-*.mjs):
 * each prints `ready` once running and ends with one `done {json}` line.
 */
import { fixture, start, type Child } from './child.js';

/** Starts `node test/fixtures/<name> ...args` and waits for its `ready` line. */
export async function startReady(name: string, args: string[]): Promise<Child> {
  const child = start(process.execPath, [fixture(name), ...args]);
  const first = await child.line();
  if (first !== 'ready') throw new Error(`${name} (pid ${child.proc.pid}) printed ${JSON.stringify(first)}, expected "ready"`);
  return child;
}

/** Reads `child`'s stdout up to its `done {json}` line and returns the parsed JSON. */
export async function doneOf<T>(child: Child): Promise<T> {
  for (;;) {
    const line = await child.line();
    if (line.startsWith('done ')) return JSON.parse(line.slice('done '.length)) as T;
  }
}

/**
 * Ends loop children (stdin EOF), returns each one's `done {json}` report,
 * and fails unless every one exited 0.
 */
export async function stopAll<T>(children: Child[]): Promise<T[]> {
  return Promise.all(
    children.map(async (c) => {
      c.proc.stdin!.end();
      const done = await doneOf<T>(c);
      const code = await c.finish();
      if (code !== 0) throw new Error(`pid ${c.proc.pid} exited ${code}, expected 0 (report ${JSON.stringify(done)})`);
      return done;
    }),
  );
}
