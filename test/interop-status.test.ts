/**
 * `xstage status` (and readOwner) on a lock file held shared or by another
 * program (issue 11 item 2): held, shared or exclusive, with the holders it
 * can name: our own `shared: true` (an OFD lock: no pid from the kernel),
 * python `lockf(LOCK_SH)` and a Go `RLock` (classic POSIX: pid), flock(1)
 * `-s` (flock: pid). A record naming a past writer is not shown as the
 * holder of a file a reader holds now. Real child processes, real locks;
 * the CLI runs as a child too.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, test } from 'vitest';
import { holder, reapAll, start } from './helpers/child.js';
import { goChild, useCsHelper } from './helpers/interop.js';
import { tempDir } from './helpers/tmp.js';
import { haveTools } from './helpers/tools.js';

afterEach(reapAll);

const BIN = fileURLToPath(new URL('../packages/staging/bin/xstage.js', import.meta.url));
const tools = haveTools('flock', 'python3');
const cs = useCsHelper();
const go = cs.enabled;

interface Status {
  state: string;
  pid: number | null;
  shared: boolean | null;
  holders: { kind: string; shared: boolean; pid?: number }[] | null;
}

function status(path: string): { json: Status; text: string } {
  const j = spawnSync(process.execPath, [BIN, 'status', '--json', path], { encoding: 'utf8' });
  expect(j.status, j.stderr).toBe(0);
  const t = spawnSync(process.execPath, [BIN, 'status', path], { encoding: 'utf8' });
  return { json: JSON.parse(j.stdout) as Status, text: t.stdout };
}

/** A past writer: a child that took the lock exclusively (its record stays) and exited. */
async function pastWriter(path: string): Promise<number> {
  const { child, first } = await holder('tryLock', path, { backend: 'kernel' });
  expect(first).toMatch(/^acquired /);
  await child.finish();
  return child.proc.pid!;
}

/** python3 fcntl.lockf(LOCK_SH): prints `acquired`, holds until stdin EOF. */
function pyLockfShared(path: string) {
  const code =
    "import fcntl,os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nfcntl.lockf(fd,fcntl.LOCK_SH|fcntl.LOCK_NB)\nprint('acquired',flush=True)\nsys.stdin.read()";
  return start('python3', ['-c', code, path]);
}

test('our own shared lock (another process): held shared, an OFD holder', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const past = await pastWriter(p);
  const { child, first } = await holder('tryLock', p, { backend: 'kernel', shared: true });
  expect(first).toMatch(/^acquired /);
  const { json, text } = status(p);
  expect(json).toMatchObject({ state: 'held', shared: true, holders: [{ kind: 'ofd', shared: true }] });
  expect(json.pid).not.toBe(past); // the past writer's record is not the holder
  expect(text).toMatch(/held shared/);
  await child.finish();
  expect(status(p).json).toMatchObject({ state: 'free', pid: past });
});

test.skipIf(!tools)('a python lockf(LOCK_SH) reader is the holder, not the past writer its record names', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const past = await pastWriter(p);
  const reader = pyLockfShared(p);
  expect(await reader.line()).toBe('acquired');
  const { json, text } = status(p);
  expect(json).toMatchObject({ state: 'held', pid: reader.proc.pid, shared: true });
  expect(json.holders).toEqual([{ kind: 'posix', shared: true, pid: reader.proc.pid }]);
  expect(text).toContain(`held shared by pid ${reader.proc.pid}`);
  expect(text).not.toContain(`pid ${past}`);
  await reader.finish();
});

test.skipIf(!tools)('flock(1) -s readers: held shared, each named', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const a = start('flock', ['-s', '-n', p, 'sh', '-c', 'echo acquired; cat >/dev/null']);
  const b = start('flock', ['-s', '-n', p, 'sh', '-c', 'echo acquired; cat >/dev/null']);
  expect(await a.line()).toBe('acquired');
  expect(await b.line()).toBe('acquired');
  const { json } = status(p);
  expect(json).toMatchObject({ state: 'held', shared: true });
  expect(json.holders?.map((h) => h.pid).sort()).toEqual([a.proc.pid, b.proc.pid].sort());
  await a.finish();
  await b.finish();
});

test.skipIf(!go)("a Go RLock(): held shared by the Go process's pid", async () => {
  await using d = await tempDir();
  const p = join(d.path, 'storage.lock');
  const { child, first } = await goChild(cs.path, 'hold', p, 'sh');
  expect(first).toBe('acquired');
  const { json } = status(p);
  expect(json).toMatchObject({ state: 'held', pid: child.proc.pid, shared: true });
  expect(json.holders).toEqual([{ kind: 'posix', shared: true, pid: child.proc.pid }]);
  await child.finish();
});

test('an exclusive holder of ours: held exclusively, named by its record', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const { child, first } = await holder('tryLock', p, { backend: 'kernel' });
  expect(first).toMatch(/^acquired /);
  const { json, text } = status(p);
  expect(json).toMatchObject({ state: 'held', pid: child.proc.pid, shared: false });
  expect(text).toContain(`held exclusively by pid ${child.proc.pid}`);
  await child.finish();
});

test("an OFD holder no record names (another program's lock file) is found through its descriptors", async () => {
  await using d = await tempDir();
  const p = join(d.path, 'storage.lock');
  writeFileSync(p, randomBytes(64)); // podman's last-writer token: we write no record into it
  const { child, first } = await holder('tryLock', p, { backend: 'kernel' });
  expect(first).toMatch(/^acquired /);
  const { json, text } = status(p);
  expect(json).toMatchObject({ state: 'held', pid: child.proc.pid, shared: false });
  expect(text).toContain(`held through pid ${child.proc.pid}`);
  await child.finish();
});
