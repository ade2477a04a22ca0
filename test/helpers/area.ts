/**
 * Helpers of the staging-area tests: a writer in a child process
 * (test/fixtures/area-worker.mjs) and a snapshot of a directory tree for
 * "nothing changed" assertions.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fixture, start, type Child } from './child.js';

/** What area-worker.mjs prints on its `acquired` line. */
export interface WorkerEntry {
  pid: number;
  id: string;
  path: string;
  lockPath: string;
}

/**
 * Starts test/fixtures/area-worker.mjs on `root` and waits until it holds its
 * entry. `cleanup`: it cleans up at stdin EOF; `leave`: it exits without
 * cleaning up (a stale entry).
 */
export async function worker(root: string, mode: 'cleanup' | 'leave', bytes = 16): Promise<{ child: Child; entry: WorkerEntry }> {
  const child = start(process.execPath, [fixture('area-worker.mjs'), root, mode, String(bytes)]);
  const first = await child.line();
  if (!first.startsWith('acquired ')) throw new Error(`area-worker printed ${JSON.stringify(first)}`);
  return { child, entry: JSON.parse(first.slice('acquired '.length)) as WorkerEntry };
}

/** A stale entry: a child creates it, holds it, then exits without cleanup (or is SIGKILLed). */
export async function staleEntry(root: string, how: 'exit' | 'SIGKILL' = 'exit', bytes = 16): Promise<WorkerEntry> {
  const { child, entry } = await worker(root, 'leave', bytes);
  if (how === 'SIGKILL') {
    child.proc.kill('SIGKILL');
    await child.reap();
  } else if ((await child.finish()) !== 0) throw new Error(`area-worker ${entry.pid} did not exit 0`);
  return entry;
}

/**
 * Every path under `dir` (recursively, never following symlinks) with its
 * type, inode, size, mode, and a file's content hash and mtime, or a link's
 * target. Directory and ctime times are left out: probing a lock through a
 * hidden hard link touches them without changing anything.
 */
export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(dir, r);
      const st = lstatSync(p);
      const base = `ino=${st.ino} mode=${st.mode.toString(8)}`;
      if (st.isSymbolicLink()) out[r] = `link ${base} -> ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${base}`;
        walk(r);
      } else {
        const hash = st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex') : '-';
        out[r] = `file ${base} size=${st.size} mtime=${st.mtimeMs} sha256=${hash}`;
      }
    }
  };
  walk('');
  return out;
}

/** The names in a staging root, without the `.xstage-area` marker `StagingArea.open` leaves. */
export function rootNames(root: string): string[] {
  return readdirSync(root)
    .filter((n) => n !== '.xstage-area')
    .sort();
}
