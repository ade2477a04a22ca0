/**
 * Interop with containers/storage's own Go lock code (issue 11): the helper
 * test/fixtures/go/cshelper is built offline against Debian's
 * golang-github-containers-storage-dev and drives pkg/lockfile
 * (Lock/RLock/Unlock) and the internal/tempdir layout (lock-<id> +
 * temp-dir-<id>). Both directions for exclusive and shared locks, a
 * SIGKILLed Go holder, and recovery leaving live Go and xstage entries alone
 * in a root shared by both layouts. Handshakes: stdout lines and
 * /proc/locks (a blocked waiter), never a sleep.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { lock, readOwner, tryLock } from '@x/core';
import { StagingArea } from '@x/staging';
import { staleEntry, worker } from './helpers/area.js';
import { reapAll } from './helpers/child.js';
import { track, within } from './helpers/core-util.js';
import { blockedWaiter, goChild, useCsHelper } from './helpers/interop.js';
import { tempDir } from './helpers/tmp.js';
import { BIN } from './helpers/xstage.js';

afterEach(reapAll);

const cs = useCsHelper();
const go = cs.enabled;

describe.skipIf(!go)("containers/storage's pkg/lockfile", () => {
  test('a Go Lock() excludes our exclusive and shared locks, naming its pid; we get it after Unlock', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'storage.lock');
    const { child, first } = await goChild(cs.path, 'hold', p, 'ex');
    expect(first).toBe('acquired');
    await expect(tryLock(p)).rejects.toMatchObject({ code: 'ELOCKED', owner: { pid: child.proc.pid } });
    await expect(tryLock(p, { shared: true })).rejects.toMatchObject({ code: 'ELOCKED' });
    await child.finish();
    await (await tryLock(p)).release();
  });

  test('a Go RLock() shares with our shared lock and excludes our exclusive lock', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'storage.lock');
    const { child, first } = await goChild(cs.path, 'hold', p, 'sh');
    expect(first).toBe('acquired');
    const ours = await tryLock(p, { shared: true });
    await expect(tryLock(p)).rejects.toMatchObject({ code: 'ELOCKED' });
    await ours.release();
    await expect(tryLock(p)).rejects.toMatchObject({ code: 'ELOCKED', owner: { pid: child.proc.pid } });
    await child.finish();
  });

  test('our exclusive lock excludes Go (try and a waiting Lock); Go gets it when we release', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'storage.lock');
    const held = await tryLock(p);
    for (const mode of ['ex', 'sh']) {
      const { child, first } = await goChild(cs.path, 'try', p, mode);
      expect(first, mode).toBe('busy');
      await child.finish();
    }
    const { child, first } = await goChild(cs.path, 'wait', p, 'ex');
    expect(first).toBe('waiting');
    await blockedWaiter(p);
    await held.release();
    expect(await child.line()).toBe('acquired');
    await child.finish();
  });

  test('our shared lock lets Go readers in and keeps Go writers out', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'storage.lock');
    writeFileSync(p, '');
    await using _held = await tryLock(p, { shared: true });
    const reader = await goChild(cs.path, 'try', p, 'sh');
    expect(reader.first).toBe('acquired');
    const writer = await goChild(cs.path, 'try', p, 'ex');
    expect(writer.first).toBe('busy');
  });

  test('a SIGKILLed Go holder hands the lock to our waiting lock() at once', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'storage.lock');
    const { child, first } = await goChild(cs.path, 'hold', p, 'ex');
    expect(first).toBe('acquired');
    const waiting = lock(p, { timeout: 20_000 });
    const state = track(waiting);
    await blockedWaiter(p);
    expect(state.settled).toBe(false);
    child.proc.kill('SIGKILL');
    const held = await within(waiting, 20_000, 'lock() after the SIGKILL');
    expect(await readOwner(p)).toMatchObject({ pid: process.pid, held: true });
    await held.release();
  });
});

describe.skipIf(!go)("recovery in a root shared with containers/storage's tempdir layout", () => {
  test('live entries of both layouts stay (Go writers in each layout, and ours), stale ones of both go, a temp-dir without its lock and unknown names are skipped', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'staging');
    const area = await StagingArea.open(root);
    // containers/storage: a live entry (held by Go) and a stale one (its Go writer SIGKILLed).
    const liveGo = await goChild(cs.path, 'tempdir', root);
    const liveId = liveGo.first.replace(/^acquired /, '');
    const staleGo = await goChild(cs.path, 'tempdir', root);
    const staleId = staleGo.first.replace(/^acquired /, '');
    staleGo.child.proc.kill('SIGKILL');
    await staleGo.child.reap();
    // A Go writer in our layout (lock-<id> + <id>/), live.
    const goInOurs = await goChild(cs.path, 'tempdir', root, 'xstage');
    const goInOursId = goInOurs.first.replace(/^acquired /, '');
    // Ours: a live entry in another process, and a stale one.
    const { child: ourWriter, entry: ourLive } = await worker(root, 'cleanup');
    const ourStale = await staleEntry(root, 'SIGKILL');
    // A temp-dir without its lock file (what containers/storage's publication gap can leave while its writer lives).
    mkdirSync(join(root, 'temp-dir-4000000001'));
    // Names of neither layout.
    mkdirSync(join(root, 'Backups'));
    writeFileSync(join(root, 'notes.txt'), 'keep me');

    for (const dryRun of [true, false]) {
      const report = await area.recover({ dryRun });
      expect({ ...report, skipped: report.skipped.map((s) => s.path).sort() }, `dryRun ${dryRun}`).toEqual({
        scanned: 5,
        removed: 2,
        live: 3,
        bytesFreed: 'layer'.length + 16,
        errors: [],
        errorsOmitted: 0,
        skipped: [join(root, 'Backups'), join(root, 'notes.txt'), join(root, 'temp-dir-4000000001')].sort(),
        skippedOmitted: 0,
      });
    }
    expect(existsSync(join(root, `temp-dir-${liveId}`, '0-layer'))).toBe(true);
    expect(existsSync(join(root, `lock-${liveId}`))).toBe(true);
    expect(existsSync(join(root, `temp-dir-${staleId}`))).toBe(false);
    expect(existsSync(join(root, `lock-${staleId}`))).toBe(false);
    expect(existsSync(ourLive.path)).toBe(true);
    expect(existsSync(join(root, goInOursId, '0-layer'))).toBe(true);
    expect(existsSync(ourStale.path)).toBe(false);
    for (const n of ['temp-dir-4000000001', 'Backups', 'notes.txt']) expect(existsSync(join(root, n)), n).toBe(true);

    // The live entries are listed with their layouts, held.
    const listed = new Map<string, { layout: string; state: string; pid: number | undefined }>();
    for await (const e of area.list()) listed.set(e.id, { layout: e.layout, state: e.state, pid: e.owner?.pid });
    expect(listed.get(liveId)).toEqual({ layout: 'containers-storage', state: 'held', pid: liveGo.child.proc.pid });
    expect(listed.get(ourLive.id)).toEqual({ layout: 'xstage', state: 'held', pid: ourLive.pid });

    // xstage status --force lists a root without our marker (podman's), both layouts.
    rmSync(join(root, '.xstage-area'));
    expect(spawnSync(process.execPath, [BIN, 'status', root]).status).toBe(66);
    const st = spawnSync(process.execPath, [BIN, 'status', '--force', '--json', root], { encoding: 'utf8' });
    expect(st.status, st.stderr).toBe(0);
    const doc = JSON.parse(st.stdout) as { entries: { id: string; layout: string; state: string; pid: number | null }[] };
    expect(doc.entries.find((e) => e.id === liveId)).toMatchObject({
      layout: 'containers-storage',
      state: 'held',
      pid: liveGo.child.proc.pid,
    });

    // Both writers still clean up normally.
    expect(await liveGo.child.finish()).toBe(0);
    expect(await goInOurs.child.finish()).toBe(0);
    expect(await ourWriter.finish()).toBe(0);
    expect(existsSync(join(root, `lock-${liveId}`))).toBe(false);
  });
});

describe.skipIf(!go)("containers/storage's own recovery (RecoverStaleDirs) in a root we share", () => {
  test('leaves our live entry alone; takes the lock file of our stale one, whose directory our recover then reclaims', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'staging');
    const area = await StagingArea.open(root);
    const { child: ourWriter, entry: ourLive } = await worker(root, 'cleanup');
    const ourStale = await staleEntry(root, 'SIGKILL');
    const staleGo = await goChild(cs.path, 'tempdir', root);
    const staleId = staleGo.first.replace(/^acquired /, '');
    staleGo.child.proc.kill('SIGKILL');
    await staleGo.child.reap();

    const rec = await goChild(cs.path, 'recover', root);
    expect(rec.first).toBe('recovered 2'); // its own stale entry and our stale lock file
    expect(existsSync(ourLive.lockPath)).toBe(true); // our OFD lock excluded its fcntl try
    expect(existsSync(ourLive.path)).toBe(true);
    expect(existsSync(join(root, `temp-dir-${staleId}`))).toBe(false);
    expect(existsSync(ourStale.lockPath)).toBe(false);
    expect(existsSync(ourStale.path)).toBe(true); // not a name of its layout

    const report = await area.recover();
    expect(report).toMatchObject({
      scanned: 2,
      removed: 1,
      live: 1,
      errors: [],
      errorsOmitted: 0,
      skipped: [],
      skippedOmitted: 0,
    });
    expect(existsSync(ourStale.path)).toBe(false);
    expect(await ourWriter.finish()).toBe(0);
  });
});

describe("recovery of containers/storage's layout (no Go needed)", () => {
  test('stale lock-<id> + temp-dir-<id> entries are reclaimed whole, whatever order the root lists their names in', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'staging');
    const area = await StagingArea.open(root);
    // Left by writers that died: free lock files (Go's os.CreateTemp names) and their directories.
    const ids = Array.from({ length: 16 }, (_, i) => String(1_000_000 + i * 7919));
    for (const id of ids) {
      writeFileSync(join(root, `lock-${id}`), '');
      mkdirSync(join(root, `temp-dir-${id}`));
      writeFileSync(join(root, `temp-dir-${id}`, '0-layer'), 'layer');
    }
    // A directory listed after its lock file was reclaimed is gone, not "a temp-dir without its lock".
    const report = await area.recover();
    expect(report).toEqual({
      scanned: 16,
      removed: 16,
      live: 0,
      bytesFreed: 16 * 5,
      errors: [],
      errorsOmitted: 0,
      skipped: [],
      skippedOmitted: 0,
    });
    for (const id of ids) expect(existsSync(join(root, `temp-dir-${id}`))).toBe(false);
  });
});
