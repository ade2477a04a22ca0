/**
 * @x/etcd on a real three-member etcd cluster: one member killed, locking
 * goes on; two killed (no quorum), new acquisitions fail EUNAVAILABLE and
 * holders' signals abort ECOMPROMISED within the TTL; members restarted,
 * locking resumes. A waiter whose watch missed a release that etcd then
 * compacted away re-reads its queue and gets its turn. A waiter whose
 * watch's member stops answering hears the release through another one; a
 * watch on a member without a leader fails (the watch requires a leader).
 */
import { afterEach, expect, test } from 'vitest';
import { isLockError } from '@x/core';
import { EtcdLocks, type EtcdLock } from '@x/etcd';
import { Gateway, type WatchMessage } from '../packages/etcd/src/gateway.js';
import { reapAll } from './helpers/child.js';
import { rejectionOf, within } from './helpers/core-util.js';
import { startEtcd } from './helpers/etcd.js';
import { haveTools } from './helpers/tools.js';

afterEach(reapAll);

/** Takes and releases `name`, retrying while a leader election is under way (EUNAVAILABLE), at most `tries` times. */
async function cycle(locks: EtcdLocks, name: string, tries = 10): Promise<bigint> {
  for (let i = 1; ; i++) {
    try {
      const held = await locks.lock(name, { timeout: 5000 });
      await held.release();
      return held.fencingToken;
    } catch (err) {
      if (!isLockError(err, 'EUNAVAILABLE') || i === tries) throw err;
    }
  }
}

test.runIf(haveTools('etcd'))(
  'three members: survives one loss; without quorum fails EUNAVAILABLE and compromises holders within the TTL; resumes after restart',
  async () => {
    await using etcd = await startEtcd(3);
    const ttl = 2;
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix: '/cluster/', ttl, requestTimeout: 1000 });
    try {
      const t0 = await cycle(locks, 'a');

      // One member down (the first endpoint, the one we were talking to).
      await etcd.kill(0);
      const t1 = await cycle(locks, 'a');
      expect(t1).toBeGreaterThan(t0);
      const held: EtcdLock = await locks.tryLock('h');

      // Two down: no quorum.
      const lost = new Promise((resolve) => held.signal.addEventListener('abort', resolve, { once: true }));
      await etcd.kill(1);
      const refused = await rejectionOf(locks.tryLock('b'));
      expect(isLockError(refused, 'EUNAVAILABLE')).toBe(true);
      // The holder's lease can no longer be kept alive: its signal aborts
      // within the TTL (plus a margin for a loaded machine), never later.
      await within(lost, ttl * 1000 + 1500, 'the holder abort');
      expect(isLockError(held.signal.reason, 'ECOMPROMISED')).toBe(true);
      await held.release(); // no throw: the lock was lost

      // Quorum back: locking resumes on a fresh lease.
      await Promise.all([etcd.restart(0), etcd.restart(1)]);
      const t2 = await cycle(locks, 'a');
      expect(t2).toBeGreaterThan(t1);
    } finally {
      await locks.close().catch(() => undefined);
    }
  },
);

test.runIf(haveTools('etcd', 'etcdctl'))(
  'a waiter whose watch missed a release that etcd then compacted away re-reads and gets its turn',
  async () => {
    await using etcd = await startEtcd(3);
    // The waiter talks to member 0 only; the holder to the others.
    const waiter = await EtcdLocks.connect({ endpoints: [etcd.endpoints[0]!], prefix: '/gap/', ttl: 30 });
    const holder = await EtcdLocks.connect({
      endpoints: etcd.endpoints.slice(1),
      prefix: '/gap/',
      ttl: 30,
      requestTimeout: 1000, // a request caught by the leader election fails fast, and cycle() retries
    });
    try {
      const held = await holder.tryLock('g');
      const waiting = waiter.lock('g', { timeout: 25_000 });
      waiting.catch(() => undefined); // awaited below; never an unhandled rejection if the test fails first
      while ((await holder.list('g'))[0]?.waiting !== 1) await new Promise((r) => setTimeout(r, 20));
      // Member 0 down: the waiter's watch breaks. The release and a
      // compaction past it happen meanwhile, so the watch cannot resume
      // where it was: etcd cancels it with the compaction revision.
      await etcd.kill(0);
      await cycle(holder, 'elected'); // the others have a leader again (a write gets through)
      await held.release();
      const revision = (JSON.parse(await etcd.etcdctl('get', '/gap/', '-w', 'json')) as { header: { revision: number } }).header
        .revision;
      await etcd.etcdctl('compact', String(revision), '--physical');
      await etcd.restart(0);
      const mine = await waiting;
      expect(mine.fencingToken).toBeGreaterThan(held.fencingToken);
      await mine.release();
    } finally {
      await waiter.close().catch(() => undefined);
      await holder.close().catch(() => undefined);
    }
  },
  60_000,
);

test.runIf(haveTools('etcd'))(
  'a waiter whose session watch is on a member that stops answering (SIGSTOP) reopens it elsewhere and hears the release',
  async () => {
    await using etcd = await startEtcd(3);
    // The waiter's session (lease, watch) starts on member 0; the holder talks to the others.
    const waiter = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix: '/stop/', ttl: 5, requestTimeout: 1000 });
    const holder = await EtcdLocks.connect({
      endpoints: etcd.endpoints.slice(1),
      prefix: '/stop/',
      ttl: 30,
      requestTimeout: 1000,
    });
    try {
      const held = await holder.tryLock('s');
      // Without a working watch the wait would end ETIMEDOUT: the bound is
      // the lock's timeout, far above the watch's idle bound (5 s, the TTL).
      const waiting = waiter.lock('s', { timeout: 25_000 });
      waiting.catch(() => undefined); // awaited below; never an unhandled rejection if the test fails first
      while ((await holder.list('s'))[0]?.waiting !== 1) await new Promise((r) => setTimeout(r, 20));
      etcd.pause(0); // its connections stay open: no reset, no end of stream, just silence
      try {
        await cycle(holder, 'elected'); // the others have a leader (member 0 may have been it)
        await held.release();
        const mine = await waiting;
        expect(mine.fencingToken).toBeGreaterThan(held.fencingToken);
        await mine.release();
      } finally {
        etcd.resume(0);
      }
    } finally {
      await waiter.close().catch(() => undefined);
      await holder.close().catch(() => undefined);
    }
  },
  60_000,
);

test.runIf(haveTools('etcd'))(
  'the session watch requires a leader: it ends when its member loses the leader, and cannot open on a member without one',
  async () => {
    await using etcd = await startEtcd(3);
    const gw = new Gateway([etcd.endpoints[0]!], 1000);
    /** The first thing a watch on member 0 reports: a message, or its end. */
    const first = () =>
      new Promise<WatchMessage | Error>((resolve) => {
        const stream = gw.watch('/leader/', 1n, '/leader/', 60_000, resolve, resolve);
        streams.push(stream);
      });
    const streams: { close(): void }[] = [];
    try {
      const created = await first();
      expect((created as WatchMessage).created).toBe(true);
      // Ended by etcd (~3 election timeouts after the leader is gone); without
      // a leader requirement it would stay open and end only when silent for 30 s.
      const ended = new Promise<Error>((resolve) =>
        streams.push(gw.watch('/leader/', 1n, '/leader/', 30_000, () => undefined, resolve)),
      );
      await Promise.all([etcd.kill(1), etcd.kill(2)]);
      // etcd notices the lost leader after a few election timeouts and ends the stream.
      expect(String(await ended)).toMatch(/no leader/);
      expect(String(await first())).toMatch(/no leader/);
    } finally {
      for (const s of streams) s.close();
      gw.close();
    }
  },
);
