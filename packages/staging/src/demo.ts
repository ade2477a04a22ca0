/**
 * `xstage demo`: the staging-area story in one run, with its own checks.
 *
 * A staging area in a temporary directory; a *holder* process keeps one
 * entry live for the whole run; a *victim* process is SIGKILLed while it is
 * writing into its entry (it says so first: the handshake); several
 * *writer* processes stage and commit artifacts while this process runs
 * recovery sweeps over the same root; then a final recovery; then checks:
 * every committed artifact is intact (sha256 of its parts against what its
 * writer hashed before committing), the victim's entry was reclaimed, the
 * holder's entry survived every sweep with its contents, no writer lost its
 * entry, and the root ends empty. Exit status 0 only when every check passed.
 *
 * Workers are this same CLI (`process.execPath dist/cli.js __demo-worker
 * <role> ...`) and print one line per event on stdout.
 */
import { kernelLocks } from '@x/core';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { AREA_MARKER, StagingArea } from './area.js';
import type { RecoverReport } from './report.js';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Concurrent committing workers. */
  workers: number;
  /** Artifacts each worker commits. */
  artifacts: number;
  /** Keep the temporary directory afterwards. */
  keep: boolean;
}

const ARTIFACT_BYTES = 64 * 1024;
const cli = fileURLToPath(new URL('./cli.js', import.meta.url));
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** A worker process with a line reader on its stdout. */
interface Worker {
  name: string;
  proc: ChildProcess;
  lines: string[];
  next(prefix: string): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startWorker(name: string, args: string[]): Worker {
  const proc = spawn(process.execPath, [cli, '__demo-worker', ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: { prefix: string; resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  const rl = createInterface({ input: proc.stdout! });
  rl.on('line', (line) => {
    lines.push(line);
    const i = waiters.findIndex((w) => line.startsWith(w.prefix));
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(line);
  });
  const exited = once(proc, 'exit').then(([code, signal]) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`${name} exited (${signal ?? code}) before printing '${w.prefix}'`));
    return { code: code as number | null, signal: signal as NodeJS.Signals | null };
  });
  return {
    name,
    proc,
    lines,
    exited,
    next: (prefix) => {
      const seen = lines.find((l) => l.startsWith(prefix));
      if (seen) return Promise.resolve(seen);
      if (proc.exitCode !== null || proc.signalCode !== null) return Promise.reject(new Error(`${name} has exited`));
      return new Promise((resolve, reject) => waiters.push({ prefix, resolve, reject }));
    },
  };
}

const ms = (t: number): string =>
  t < 10 ? `${t.toFixed(2)} ms` : t < 1000 ? `${t.toFixed(0)} ms` : `${(t / 1000).toFixed(2)} s`;

/** Reads a committed artifact back and checks it against its manifest and the writer's hash. */
async function verifyArtifact(dest: string, sha: string): Promise<string | null> {
  try {
    const manifest = JSON.parse(await readFile(join(dest, 'MANIFEST'), 'utf8')) as {
      sha256: string;
      parts: string[];
      size: number;
    };
    const data = Buffer.concat(await Promise.all(manifest.parts.map((p) => readFile(join(dest, p)))));
    if (data.length !== manifest.size) return `${dest}: ${data.length} bytes, manifest says ${manifest.size}`;
    if (sha256(data) !== sha || manifest.sha256 !== sha) return `${dest}: checksum mismatch`;
    return null;
  } catch (err) {
    return `${dest}: ${(err as Error).message}`;
  }
}

/**
 * Runs the demo and prints its report; resolves the exit status (0 when
 * every check passed, 1 otherwise).
 *
 * @param options - how many workers and artifacts, and whether to keep the temp dir
 * @returns the exit status
 *
 * @example
 * ```ts
 * process.exitCode = await runDemo({ workers: 4, artifacts: 5, keep: false });
 * ```
 */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { workers: nWorkers, artifacts, keep } = options;
  if (!kernelLocks.available) {
    // Staging entries are kernel locks: nothing to show without them.
    process.stderr.write(`xstage demo: ${kernelLocks.reason}\n`);
    return 69; // EX_UNAVAILABLE
  }
  const t0 = performance.now();
  const base = await mkdtemp(join(tmpdir(), 'xstage-demo-'));
  const root = join(base, 'staging');
  const store = join(base, 'store');
  const scratch = join(base, 'scratch');
  const all: Worker[] = [];
  const checks: { ok: boolean; text: string }[] = [];
  const check = (ok: boolean, text: string): void => void checks.push({ ok, text });
  const say = (text: string): void => void process.stdout.write(`${text}\n`);

  try {
    await mkdir(store);
    await mkdir(scratch);
    const area = await StagingArea.open(root);
    say(`xstage demo: staging area ${root}`);
    say(`  kernel locks: ${kernelLocks.kind}; ${nWorkers} writers x ${artifacts} artifacts of ${ARTIFACT_BYTES / 1024} KiB\n`);

    // 1. A holder keeps one entry live through every sweep.
    const holder = startWorker('holder', ['holder', root, store]);
    all.push(holder);
    const held = JSON.parse((await holder.next('holding ')).slice('holding '.length)) as {
      id: string;
      path: string;
      sha: string;
    };
    say(`  holder   pid ${holder.proc.pid} holds entry ${held.id} (live for the whole run)`);

    // 2. A victim is SIGKILLed while writing into its entry.
    const victim = startWorker('victim', ['victim', root, store]);
    all.push(victim);
    const mid = JSON.parse((await victim.next('mid-write ')).slice('mid-write '.length)) as {
      id: string;
      path: string;
      written: number;
    };
    const before = await stateOf(area, mid.id);
    const tKill = performance.now();
    victim.proc.kill('SIGKILL');
    const death = await victim.exited;
    const after = await stateOf(area, mid.id);
    say(
      `  victim   pid ${victim.proc.pid} SIGKILLed mid-write (${mid.written} bytes into entry ${mid.id}): lock ${before} -> ${after} ${ms(performance.now() - tKill)} after the kill`,
    );
    check(death.signal === 'SIGKILL', `the victim died of SIGKILL (${death.signal ?? death.code})`);
    check(
      before === 'held' && after === 'free',
      `the victim's lock was held while it lived and free the instant it died (${before} -> ${after})`,
    );

    // 3. Writers stage and commit while this process sweeps the same root.
    const tWrite = performance.now();
    const writers = Array.from({ length: nWorkers }, (_, i) =>
      startWorker(`writer ${i}`, ['writer', root, store, scratch, String(i), String(artifacts)]),
    );
    all.push(...writers);
    let writing = true;
    const finished = Promise.all(writers.map((w) => w.exited)).finally(() => (writing = false));
    const sweeps: RecoverReport[] = [];
    const sweepTimes: number[] = [];
    let victimGoneAt: number | undefined;
    while (writing) {
      const ts = performance.now();
      sweeps.push(await area.recover());
      sweepTimes.push(performance.now() - ts);
      if (victimGoneAt === undefined && !existsSync(mid.path)) victimGoneAt = sweeps.length;
      await Promise.race([finished, sleep(5)]);
    }
    const exits = await finished;
    const writeTime = performance.now() - tWrite;
    const committed = writers.flatMap((w) => w.lines.filter((l) => l.startsWith('committed ')));
    const failures = writers.flatMap((w) => w.lines.filter((l) => l.startsWith('error ')).map((l) => `${w.name}: ${l}`));
    const sweptRemoved = sweeps.reduce((n, r) => n + r.removed, 0);
    const sweptErrors = sweeps.reduce((n, r) => n + r.errors.length + r.errorsOmitted, 0);
    const avgSweep = sweepTimes.reduce((a, b) => a + b, 0) / Math.max(1, sweepTimes.length);
    say(
      `  writers  ${committed.length} artifacts committed by ${nWorkers} processes in ${ms(writeTime)} (${failures.length} errors)`,
    );
    say(
      `  sweeps   ${sweeps.length} recovery passes ran meanwhile (${ms(avgSweep)} each on average): ${sweptRemoved} removed, ${sweptErrors} errors`,
    );
    check(
      exits.every((e) => e.code === 0) && failures.length === 0,
      `every writer finished without losing its entry${failures.length ? `: ${failures.slice(0, 3).join('; ')}` : ''}`,
    );
    check(
      committed.length === nWorkers * artifacts,
      `every writer committed all its artifacts (${committed.length}/${nWorkers * artifacts})`,
    );
    check(sweptErrors === 0, `the concurrent sweeps reported no errors (${sweptErrors})`);

    // 4. A final recovery, with the holder still live.
    const tRec = performance.now();
    const final = await area.recover();
    say(
      `  recover  final pass in ${ms(performance.now() - tRec)}: scanned ${final.scanned}, removed ${final.removed}, live ${final.live}, ${final.errors.length + final.errorsOmitted} errors`,
    );
    const victimGone = !existsSync(mid.path) && !existsSync(join(root, `lock-${mid.id}`));
    check(victimGone, `the killed worker's entry was reclaimed${victimGoneAt ? ` (by sweep ${victimGoneAt})` : ''}`);
    const reclaimed = sweptRemoved + final.removed;
    check(
      reclaimed === 1,
      `exactly one entry was reclaimed in all, the victim's: no live entry was taken for abandoned (${reclaimed})`,
    );
    const heldState = await stateOf(area, held.id);
    const heldIntact = (await readFile(join(held.path, 'data')).then(sha256, () => null)) === held.sha;
    check(
      heldState === 'held' && heldIntact && final.live >= 1,
      `the live entry survived ${sweeps.length + 1} sweeps with its contents (state ${heldState}, contents ${heldIntact ? 'intact' : 'damaged'})`,
    );

    // 5. The holder commits; everything committed is checked.
    holder.proc.stdin!.end();
    const holderDone = await holder.next('committed ');
    const holderExit = await holder.exited;
    check(holderExit.code === 0, `the holder committed its entry after the sweeps (exit ${holderExit.code})`);
    const tVerify = performance.now();
    const results = await Promise.all(
      [...committed, holderDone].map((line) => {
        const [, dest, sha] = line.split(' ');
        return verifyArtifact(dest!, sha!);
      }),
    );
    const bad = results.filter((r): r is string => r !== null);
    say(
      `  verify   ${results.length - bad.length}/${results.length} committed artifacts intact (sha256) in ${ms(performance.now() - tVerify)}`,
    );
    check(
      bad.length === 0 && results.length === nWorkers * artifacts + 1,
      `every committed artifact is intact${bad.length ? `: ${bad.slice(0, 3).join('; ')}` : ''}`,
    );

    await area.recover();
    const left = (await readdir(root)).filter((name) => name !== AREA_MARKER);
    check(left.length === 0, `the staging area is empty at the end (${left.length} names left besides its marker)`);
  } catch (err) {
    check(false, `the demo ran to the end: ${(err as Error).stack ?? String(err)}`);
  } finally {
    for (const w of all) if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill('SIGKILL');
    await Promise.all(all.map((w) => w.exited));
    if (!keep) await rm(base, { recursive: true, force: true });
  }

  const ok = checks.every((c) => c.ok);
  process.stdout.write('\n');
  for (const c of checks) process.stdout.write(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.text}\n`);
  process.stdout.write(
    `\n${ok ? 'PASS' : 'FAIL'}: ${checks.filter((c) => c.ok).length}/${checks.length} checks in ${ms(performance.now() - t0)}${keep ? `; kept ${base}` : ''}\n`,
  );
  return ok ? 0 : 1;
}

/** The state of entry `id` as a sweep would judge it, probed without changing anything. */
async function stateOf(area: StagingArea, id: string): Promise<string> {
  for await (const e of area.list()) if (e.id === id) return e.state;
  return 'gone';
}

/** Writes one artifact into a fresh entry: half staged from a scratch file, half written in place. */
async function writeArtifact(area: StagingArea, store: string, scratch: string, name: string): Promise<void> {
  const dir = await area.create();
  try {
    const data = randomBytes(ARTIFACT_BYTES);
    const sha = sha256(data);
    const half = data.length >> 1;
    const part = join(scratch, `${name}.part`);
    await writeFile(part, data.subarray(0, half));
    const staged = await dir.stage(part); // -> <entry>/0-<name>.part
    await writeFile(join(dir.path, 'tail'), data.subarray(half));
    const parts = [staged.slice(dir.path.length + 1), 'tail'];
    await writeFile(join(dir.path, 'MANIFEST'), JSON.stringify({ sha256: sha, parts, size: data.length }));
    // Still ours after the sweeps that ran meanwhile?
    const back = Buffer.concat(await Promise.all(parts.map((p) => readFile(join(dir.path, p)))));
    if (sha256(back) !== sha) throw Object.assign(new Error(`entry ${dir.id} changed under its writer`), { code: 'ELIVE' });
    const dest = join(store, name);
    await dir.commit(dest);
    process.stdout.write(`committed ${dest} ${sha}\n`);
  } finally {
    await dir.cleanup();
  }
}

/**
 * The demo's worker processes (`xstage __demo-worker <role> ...`): `writer`,
 * `victim` and `holder`. Prints one line per event; resolves the exit status.
 *
 * @param args - the role and its arguments
 * @returns the exit status
 *
 * @example
 * ```ts
 * process.exitCode = await demoWorker(['writer', root, store, scratch, '0', '5']);
 * ```
 */
export async function demoWorker(args: string[]): Promise<number> {
  const [role, root, store, scratch, index, count] = args;
  try {
    if (!root || !store) throw new Error('usage: __demo-worker <role> <root> <store> ...');
    const area = await StagingArea.open(root, { create: false });
    if (role === 'writer') {
      for (let i = 0; i < Number(count); i++) await writeArtifact(area, store, scratch!, `w${index}-a${i}`);
      process.stdout.write('done\n');
      return 0;
    }
    if (role === 'victim') {
      const dir = await area.create();
      const file = await open(join(dir.path, 'data'), 'w');
      const chunk = randomBytes(ARTIFACT_BYTES >> 1);
      await file.write(chunk);
      process.stdout.write(`mid-write ${JSON.stringify({ id: dir.id, path: dir.path, written: chunk.length })}\n`);
      // The parent SIGKILLs us now; until then, keep the file open and the entry held.
      process.stdin.resume();
      await once(process.stdin, 'end');
      await file.close();
      await dir.cleanup();
      return 0;
    }
    if (role === 'holder') {
      const dir = await area.create();
      const data = randomBytes(ARTIFACT_BYTES);
      await writeFile(join(dir.path, 'data'), data);
      await writeFile(join(dir.path, 'MANIFEST'), JSON.stringify({ sha256: sha256(data), parts: ['data'], size: data.length }));
      process.stdout.write(`holding ${JSON.stringify({ id: dir.id, path: dir.path, sha: sha256(data) })}\n`);
      process.stdin.resume();
      await once(process.stdin, 'end');
      const dest = join(store, 'holder');
      await dir.commit(dest);
      process.stdout.write(`committed ${dest} ${sha256(data)}\n`);
      return 0;
    }
    throw new Error(`unknown role '${role}'`);
  } catch (err) {
    process.stdout.write(`error ${(err as NodeJS.ErrnoException).code ?? 'ERR'} ${(err as Error).message}\n`);
    return 1;
  }
}
