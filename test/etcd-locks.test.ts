/**
 * @x/etcd against a real single-member etcd (test/helpers/etcd.ts): mutual
 * exclusion and fencing tokens across processes, FIFO waiters, a SIGKILLed
 * or SIGSTOPped holder, waits bounded by timeout/signal leaving nothing in
 * etcd, a key deleted under its holder, bad input.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { isLockError } from '@x/core';
import { EtcdLocks } from '@x/etcd';
import { fixture, reapAll, start, type Child } from './helpers/child.js';
import { aborted, rejectionOf, within } from './helpers/core-util.js';
import { startEtcd, freePort, type EtcdCluster } from './helpers/etcd.js';
import { haveTools } from './helpers/tools.js';
import { tempDir } from './helpers/tmp.js';
import { BIN, xstage } from './helpers/xstage.js';

const run = haveTools('etcd', 'etcdctl');
afterEach(reapAll);

let etcd: EtcdCluster;
beforeAll(async () => {
  if (run) etcd = await startEtcd(1);
});
afterAll(async () => {
  await etcd?.[Symbol.asyncDispose]();
});

let n = 0;
/** A fresh key prefix per test: tests share the etcd, never its keys. */
const fresh = () => `/t${process.pid}-${++n}/`;

function worker(args: object): Child {
  return start(process.execPath, [fixture('etcd-worker.mjs'), JSON.stringify(args)]);
}

/** Polls `check` until it is true (a condition wait on etcd's state, not a sleep for time to pass). */
async function until(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((r) => setTimeout(r, 20));
}

/** Every key under `prefix`, read with etcdctl (not through the code under test). */
async function keysUnder(prefix: string): Promise<string[]> {
  const out = await etcd.etcdctl('get', '--prefix', '--keys-only', prefix);
  return out.split('\n').filter(Boolean);
}

describe.runIf(run)('@x/etcd on one etcd member', () => {
  test('N processes x M acquisitions: counter exact, fencing tokens strictly increasing in acquisition order', async () => {
    await using dir = await tempDir();
    const counter = join(dir.path, 'counter');
    writeFileSync(counter, '0');
    const prefix = fresh();
    const N = 4;
    const M = 25;
    const children = Array.from({ length: N }, () =>
      worker({ mode: 'loop', endpoints: etcd.endpoints, prefix, name: 'c', count: M, counter }),
    );
    const seen: [string, number][] = [];
    for (const c of children) {
      const line = await c.line();
      expect(line).toMatch(/^done /);
      seen.push(...(JSON.parse(line.slice(5)) as [string, number][]));
    }
    expect(Number(readFileSync(counter, 'utf8'))).toBe(N * M);
    seen.sort((a, b) => a[1] - b[1]);
    expect(seen.map((s) => s[1])).toEqual(Array.from({ length: N * M }, (_, i) => i + 1));
    for (let i = 1; i < seen.length; i++) expect(BigInt(seen[i]![0])).toBeGreaterThan(BigInt(seen[i - 1]![0]));
    expect(await keysUnder(prefix)).toEqual([]);
  });

  test('waiters are served first come, first served', async () => {
    await using dir = await tempDir();
    const log = join(dir.path, 'order');
    writeFileSync(log, '');
    const prefix = fresh();
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix });
    try {
      const held = await locks.tryLock('q');
      const K = 5;
      const waiters: Child[] = [];
      for (let i = 0; i < K; i++) {
        const w = worker({ mode: 'queue', endpoints: etcd.endpoints, prefix, name: 'q', id: i, log });
        expect(await w.line()).toBe('started');
        // Handshake: its key is in the queue before the next one starts.
        await until(async () => (await locks.list('q'))[0]?.waiting === i + 1);
        waiters.push(w);
      }
      await held.release();
      const tokens = [];
      for (const w of waiters) tokens.push(BigInt((await w.line()).split(' ')[1]!));
      expect(readFileSync(log, 'utf8')).toBe('0\n1\n2\n3\n4\n');
      for (let i = 1; i < K; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]!);
      expect(tokens[0]).toBeGreaterThan(held.fencingToken);
    } finally {
      await locks.close();
    }
  });

  test('holder SIGKILLed: the waiter gets the lock once the lease expires; holder exits cleanly: at once', async () => {
    const prefix = fresh();
    const ttl = 2;
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix, ttl });
    try {
      const killed = worker({ mode: 'hold', endpoints: etcd.endpoints, prefix, name: 'k', ttl });
      const first = BigInt((await killed.line()).split(' ')[1]!);
      killed.proc.kill('SIGKILL');
      // Bounded: TTL plus a margin, or the wait fails ETIMEDOUT.
      const next = await locks.lock('k', { timeout: ttl * 1000 + 3000 });
      expect(next.fencingToken).toBeGreaterThan(first);
      await next.release();

      // A clean exit (release + close) hands over at once: with a 60 s TTL,
      // a waiter that relied on expiry would time out.
      const clean = worker({ mode: 'hold', endpoints: etcd.endpoints, prefix, name: 'e', ttl: 60 });
      await clean.line();
      const waiting = locks.lock('e', { timeout: 10_000 });
      await until(async () => (await locks.list('e'))[0]?.waiting === 1);
      expect(await clean.finish()).toBe(0);
      await (await waiting).release();
    } finally {
      await locks.close();
    }
  });

  test('holder SIGSTOPped past the TTL: a waiter takes over; after SIGCONT the old holder is compromised and its release leaves the new holder alone', async () => {
    const prefix = fresh();
    const ttl = 2;
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix, ttl });
    const old = worker({ mode: 'hold', endpoints: etcd.endpoints, prefix, name: 's', ttl });
    try {
      const oldToken = BigInt((await old.line()).split(' ')[1]!);
      old.proc.kill('SIGSTOP');
      const next = await locks.lock('s', { timeout: ttl * 1000 + 5000 });
      expect(next.fencingToken).toBeGreaterThan(oldToken);
      old.proc.kill('SIGCONT');
      expect(await old.line()).toBe('compromised ECOMPROMISED');
      old.proc.stdin!.write('release\n');
      expect(await old.line()).toBe('released');
      expect(next.held).toBe(true);
      expect(await keysUnder(prefix)).toEqual([next.key]);
      expect(await old.finish()).toBe(0); // no crash from a timer
      await next.release();
    } finally {
      old.proc.kill('SIGCONT');
      await locks.close();
    }
  });

  test('timeout and signal end a wait and remove the waiter key; close() releases everything', async () => {
    const prefix = fresh();
    const a = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix });
    const b = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix });
    try {
      const held = await a.tryLock('w');
      const timedOut = await rejectionOf(b.lock('w', { timeout: 200 }));
      expect(isLockError(timedOut, 'ETIMEDOUT')).toBe(true);
      expect(await keysUnder(prefix)).toEqual([held.key]);
      const ac = new AbortController();
      const aborted = b.lock('w', { signal: ac.signal });
      await until(async () => (await a.list('w'))[0]?.waiting === 1);
      ac.abort(new Error('stop'));
      expect(((await rejectionOf(aborted)) as Error).message).toBe('stop');
      expect(await keysUnder(prefix)).toEqual([held.key]);
      const busy = await rejectionOf(b.tryLock('w'));
      expect(isLockError(busy, 'ELOCKED')).toBe(true);
      expect((busy as { owner?: { pid?: number } }).owner?.pid).toBe(process.pid);
      expect(await keysUnder(prefix)).toEqual([held.key]);
      await a.close();
      expect(held.held).toBe(false);
      expect(isLockError(held.signal.reason, 'ERELEASED')).toBe(true);
      expect(await keysUnder(prefix)).toEqual([]);
      await held.release(); // idempotent, after close too
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a held key deleted by someone else (etcdctl del): the holder hears it from the watch at once (ECOMPROMISED, onCompromised); its own release never does', async () => {
    // A 600 s TTL: the keep-alive check (every 200 s) cannot be what notices.
    const prefix = fresh();
    const holder = worker({ mode: 'hold', endpoints: etcd.endpoints, prefix, name: 'd', ttl: 600 });
    const other = worker({ mode: 'hold', endpoints: etcd.endpoints, prefix, name: 'keep', ttl: 600 });
    expect(await holder.line()).toMatch(/^acquired /);
    expect(await other.line()).toMatch(/^acquired /);
    const [key] = await keysUnder(`${prefix}d/`);
    await etcd.etcdctl('del', key!);
    expect(await within(holder.line(), 20_000, 'the abort')).toBe('compromised ECOMPROMISED');
    holder.proc.stdin!.write('release\n'); // a lost lock's release: quiet, deletes nothing
    expect(await holder.line()).toBe('released');
    // Our own release: the watch reports the deletion of our key, and
    // neither the released handle nor the other one counts it as a loss
    // (a "compromised" line would come before "released").
    other.proc.stdin!.write('release\n');
    expect(await other.line()).toBe('released');
    expect(await keysUnder(prefix)).toEqual([]);
    expect(await holder.finish()).toBe(0);
    expect(await other.finish()).toBe(0);

    // In-process: onCompromised is called with the signal's reason; a second
    // handle of the same session is left alone.
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix, ttl: 600 });
    try {
      let called: unknown;
      const held = await locks.tryLock('d', { onCompromised: (e) => (called = e) });
      const kept = await locks.tryLock('keep');
      await etcd.etcdctl('del', held.key);
      await within(aborted(held.signal), 20_000, 'the abort');
      expect(isLockError(held.signal.reason, 'ECOMPROMISED')).toBe(true);
      expect(called).toBe(held.signal.reason);
      await held.release();
      await kept.release();
      expect(isLockError(kept.signal.reason, 'ERELEASED')).toBe(true);
    } finally {
      await locks.close();
    }
  });

  test('withLock: nested lock of the same name rejects ELOCKED instead of deadlocking', async () => {
    const locks = await EtcdLocks.connect({ endpoints: etcd.endpoints, prefix: fresh() });
    try {
      const r = await locks.withLock('n', async () => rejectionOf(locks.lock('n')));
      expect(isLockError(r, 'ELOCKED')).toBe(true);
      expect(await locks.list()).toEqual([]);
    } finally {
      await locks.close();
    }
  });

  test('bad input: TypeError or a coded error, nothing left in etcd', async () => {
    const prefix = fresh();
    const ok = { endpoints: etcd.endpoints, prefix };
    for (const ttl of [0, NaN, -1, 1.5, Infinity, '10']) {
      await expect(EtcdLocks.connect({ ...ok, ttl: ttl as number })).rejects.toThrow(/`ttl`/);
    }
    for (const endpoints of [[], '', 'ftp://x', ['not a url'], [42], 'http://u:p@h:1']) {
      await expect(EtcdLocks.connect({ ...ok, endpoints: endpoints as string })).rejects.toThrow(/`endpoints`/);
    }
    await expect(EtcdLocks.connect({ ...ok, prefix: 'a\nb' })).rejects.toThrow(/`prefix`/);
    await expect(EtcdLocks.connect({ ...ok, bogus: 1 } as never)).rejects.toThrow(TypeError);
    const dead = await freePort();
    const unreachable = await rejectionOf(EtcdLocks.connect({ endpoints: `http://127.0.0.1:${dead}`, prefix }));
    expect(isLockError(unreachable, 'EUNAVAILABLE')).toBe(true);

    const locks = await EtcdLocks.connect(ok);
    try {
      for (const name of ['', '/', 'a/b', '..', '.', 'x\0y', 'x\ny', 'x'.repeat(256), '\ud800', 42, null, undefined]) {
        await expect(locks.tryLock(name as string)).rejects.toThrow(TypeError);
        await expect(locks.lock(name as string)).rejects.toThrow(TypeError);
      }
      for (const options of [{ timeout: -1 }, { timeout: NaN }, { signal: {} }, { onCompromised: 1 }, { bogus: 1 }, 5]) {
        await expect(locks.lock('ok', options as never)).rejects.toThrow(TypeError);
      }
      await expect(locks.withLock('ok', 5 as never)).rejects.toThrow(TypeError);
      // Names that are only unusual work and stay apart from each other.
      const odd = await locks.tryLock('a b*?[]\\..%\u00e9\ud83d\ude00');
      const near = await locks.tryLock('a b*?[]\\..%\u00e9\ud83d\ude00x');
      await odd.release();
      await near.release();
    } finally {
      await locks.close();
    }
    expect(await keysUnder(prefix)).toEqual([]);
  });

  test('xstage run --etcd holds the lock while the command runs; status --etcd lists it; errors exit 75, 69, 64', async () => {
    const e = etcd.endpoints.join(',');
    const inner = `"${process.execPath}" "${BIN}"`;
    // Inside the command: status sees the lock held by the xstage process, a second run is refused (75).
    const r = await xstage(
      'run',
      '--etcd',
      e,
      'cli-job',
      '--',
      'sh',
      '-c',
      `${inner} status --etcd ${e} --json && ${inner} run --etcd ${e} cli-job -- true; echo "inner=$?"`,
    );
    expect(r.code).toBe(0);
    const status = JSON.parse(r.stdout.split('\n')[0]!) as { locks: { name: string; pid: number; waiting: number }[] };
    expect(status.locks).toMatchObject([{ name: 'cli-job', waiting: 0 }]);
    expect(r.stdout).toContain('inner=75');
    expect(r.stderr).toMatch(/'cli-job' is locked by pid \d+/);
    // Afterwards nothing is held, and the command's status is passed through.
    expect((await xstage('status', '--etcd', e, '--json')).stdout).toContain('"locks":[]');
    expect((await xstage('run', '--etcd', e, 'cli-job', '--', 'sh', '-c', 'exit 7')).code).toBe(7);
    expect((await xstage('run', '--etcd', `http://127.0.0.1:${await freePort()}`, 'x', '--', 'true')).code).toBe(69);
    expect((await xstage('run', '--etcd', 'not-a-url', 'x', '--', 'true')).code).toBe(64);
    expect((await xstage('run', '--etcd', e, 'a/b', '--', 'true')).code).toBe(64);
    expect((await xstage('status', '--etcd', e, 'p1', 'p2')).code).toBe(64);
  });
});
