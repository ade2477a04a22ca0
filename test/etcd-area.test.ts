/**
 * A staging root shared by two simulated hosts (each process in its own uts
 * and pid namespaces with its own hostname, so pids and hostnames are not
 * comparable across them, as on two machines) with entry ownership in a
 * real etcd: recovery on either host never deletes the other's live entry,
 * lists owners of both hosts, and reclaims a SIGKILLed writer's entry once
 * its lease has expired, through the API and through `xstage recover --etcd`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { EtcdLocks } from '@x/etcd';
import { isLockError, StagingArea } from '@x/staging';
import { aborted, exited, rejectionOf } from './helpers/core-util.js';
import { fixture, reapAll, start, type Child } from './helpers/child.js';
import { freePort, startEtcd } from './helpers/etcd.js';
import { haveTools } from './helpers/tools.js';
import { tempDir } from './helpers/tmp.js';
import { xstage } from './helpers/xstage.js';

afterEach(reapAll);

/** Runs test/fixtures/etcd-area.mjs as a process of host `host` (fresh uts+pid namespaces; killing it kills the host's process). */
function onHost(host: string, args: object): Child {
  return start('unshare', [
    '--uts',
    '--pid',
    '--fork',
    '--mount-proc',
    '--kill-child',
    'sh',
    '-c',
    'hostname "$0" && exec "$@"',
    host,
    process.execPath,
    fixture('etcd-area.mjs'),
    JSON.stringify(args),
  ]);
}

async function recoverOn(host: string, args: object) {
  const c = onHost(host, { ...args, mode: 'recover' });
  const report = JSON.parse((await c.line()).replace(/^report /, '')) as { removed: number; live: number; errors: string[] };
  const list = JSON.parse((await c.line()).replace(/^list /, '')) as { id: string; state: string; hostname: string | null }[];
  expect(await c.finish()).toBe(0);
  return { report, list };
}

const root = process.getuid?.() === 0;

test.runIf(haveTools('etcd', 'unshare') && root)(
  'two hosts share a staging root: recovery on either never deletes the other live entry, and reclaims a SIGKILLed writer once its lease is gone',
  async () => {
    await using etcd = await startEtcd(1);
    await using dir = await tempDir();
    const common = { endpoints: etcd.endpoints, prefix: '/area/', root: join(dir.path, 'staging'), ttl: 2 };
    // The test's own view of etcd (not a host).
    const observer = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix: '/area/' });
    try {
      const a = onHost('host-a', { ...common, mode: 'writer' });
      const [, idA, hostA] = (await a.line()).split(' ');
      const b = onHost('host-b', { ...common, mode: 'writer' });
      const [, idB, hostB] = (await b.line()).split(' ');
      expect([hostA, hostB]).toEqual(['host-a', 'host-b']);

      for (const host of ['host-a', 'host-b']) {
        const { report, list } = await recoverOn(host, common);
        expect(report).toMatchObject({ removed: 0, live: 2, errors: [] });
        const seen = Object.fromEntries(list.map((e) => [e.id, [e.state, e.hostname]]));
        expect(seen).toEqual({ [idA!]: ['held', 'host-a'], [idB!]: ['held', 'host-b'] });
      }
      expect(existsSync(join(common.root, idA!, 'data'))).toBe(true);
      expect(existsSync(join(common.root, idB!, 'data'))).toBe(true);

      // Host b's writer dies without a word; its entry is reclaimed once its
      // lease has expired in etcd (waited for by looking at etcd, not a clock).
      b.proc.kill('SIGKILL');
      // Not reap(): it would close the writer's stdin, which (if it won the
      // race with the kernel's SIGKILL) makes the writer clean up after all.
      await exited(b.proc);
      while ((await observer.list()).some((h) => h.name === idB)) await new Promise((r) => setTimeout(r, 50));
      const after = await recoverOn('host-a', common);
      expect(after.report).toMatchObject({ removed: 1, live: 1, errors: [] });
      expect(after.list).toEqual([{ id: idA, state: 'held', hostname: 'host-a', hasDir: true }]);
      expect(existsSync(join(common.root, idB!))).toBe(false);
      expect(existsSync(join(common.root, idA!, 'data'))).toBe(true);

      expect(await a.finish()).toBe(0);
      expect(existsSync(join(common.root, idA!))).toBe(false);
      // The local default is untouched by all this: no lock files in the root.
      const area = await StagingArea.open(common.root, { locks: observer });
      const rest = [];
      for await (const e of area.list()) rest.push(e);
      expect(rest).toEqual([]);
      // Local ownership refuses this root (it would take every entry for
      // garbage), and a populated local root refuses ownership in etcd.
      await expect(StagingArea.open(common.root)).rejects.toMatchObject({ code: 'ENOTSUP' });
      const local = await StagingArea.open(join(dir.path, 'local'));
      const entry = await local.create();
      await expect(StagingArea.open(local.root, { locks: observer })).rejects.toMatchObject({ code: 'ENOTSUP' });
      await entry.cleanup();
    } finally {
      await observer.close();
    }
  },
);

test.runIf(haveTools('etcd'))(
  'a root opened by both a local-ownership process and an etcd one: etcd recovery leaves the local live entry alone',
  async () => {
    await using etcd = await startEtcd(1);
    await using dir = await tempDir();
    const root = join(dir.path, 'staging');
    const local = await StagingArea.open(root); // marker only: still adoptable by a lock service
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix: '/mixed/', ttl: 5 });
    try {
      const shared = await StagingArea.open(root, { locks });
      const entry = await local.create(); // a live local entry: lock-<id> held, <id>/ made
      const report = await shared.recover();
      expect(report.removed).toBe(0);
      expect(existsSync(entry.path)).toBe(true);
      await entry.cleanup();
    } finally {
      await locks.close();
    }
  },
  60_000,
);

test.runIf(haveTools('etcd', 'etcdctl'))(
  'an entry whose etcd lease was lost is never committed: ECOMPROMISED, dest not created, the tree left for recovery',
  async () => {
    await using etcd = await startEtcd(1);
    await using dir = await tempDir();
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix: '/lost/', ttl: 2 });
    try {
      const area = await StagingArea.open(join(dir.path, 'staging'), { locks });
      const entry = await area.create();
      const probe = await locks.tryLock('probe'); // same session: aborts when the session's lease is lost
      const leases = (await etcd.etcdctl('lease', 'list')).split('\n').filter((l) => /^[0-9a-f]+$/.test(l.trim()));
      expect(leases.length).toBeGreaterThan(0);
      for (const id of leases) await etcd.etcdctl('lease', 'revoke', id.trim());
      await aborted(probe.signal);
      const dest = join(dir.path, 'artifact');
      const err = await rejectionOf(entry.commit(dest));
      expect(isLockError(err, 'ECOMPROMISED'), String(err)).toBe(true);
      expect(existsSync(dest)).toBe(false);
      expect(existsSync(entry.path)).toBe(true);
    } finally {
      await locks.close().catch(() => undefined);
    }
  },
  60_000,
);

test.runIf(haveTools('etcd', 'unshare') && root)(
  'xstage recover --etcd: a live entry on another host survives, a SIGKILLed writer is reclaimed once its lease is gone; --dry-run changes nothing',
  async () => {
    await using etcd = await startEtcd(1);
    await using dir = await tempDir();
    const common = { endpoints: etcd.endpoints, prefix: '/cli-area/', root: join(dir.path, 'staging'), ttl: 2 };
    const e = etcd.endpoints.join(',');
    const observer = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix: common.prefix });
    try {
      const live = onHost('host-a', { ...common, mode: 'writer' });
      const [, idLive] = (await live.line()).split(' ');
      const doomed = onHost('host-b', { ...common, mode: 'writer' });
      const [, idDoomed] = (await doomed.line()).split(' ');
      doomed.proc.kill('SIGKILL');
      await exited(doomed.proc); // not reap(): closing its stdin could let it clean up first
      while ((await observer.list()).some((h) => h.name === idDoomed)) await new Promise((r) => setTimeout(r, 50));

      const dry = await xstage('recover', '--etcd', e, '--dry-run', '--json', common.root, common.prefix);
      expect(dry.code, dry.stderr).toBe(0);
      expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, scanned: 2, removed: 1, live: 1, errors: [] });
      expect(existsSync(join(common.root, idDoomed!, 'data'))).toBe(true);

      const real = await xstage('recover', '--etcd', e, '--json', common.root, common.prefix);
      expect(real.code, real.stderr).toBe(0);
      expect(JSON.parse(real.stdout)).toMatchObject({ dryRun: false, scanned: 2, removed: 1, live: 1, errors: [] });
      expect(existsSync(join(common.root, idDoomed!))).toBe(false);
      expect(existsSync(join(common.root, idLive!, 'data'))).toBe(true);
      expect(await live.finish()).toBe(0);

      // Without --etcd the root is refused (its entries have no lock files);
      // a wrong prefix, an unreachable etcd and bad usage are errors.
      expect((await xstage('recover', common.root)).code).toBe(66);
      expect((await xstage('recover', '--etcd', `http://127.0.0.1:${await freePort()}`, common.root)).code).toBe(69);
      expect((await xstage('recover', '--etcd', e, common.root, 'p', 'extra')).code).toBe(64);
      expect((await xstage('recover', '--etcd', e, '--force', common.root)).code).toBe(64);
      expect((await xstage('recover', '--etcd', e, join(dir.path, 'nope'))).code).toBe(66);
    } finally {
      await observer.close();
    }
  },
);
