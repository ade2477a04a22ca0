/**
 * @x/core conformance: what every backend must do (docs/contract.md 3.2, 3.3 item 1),
 * run once per backend in XLOCK_BACKENDS. Backend-neutral: every call
 * passes `{ backend }`, child holders too.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, test, vi } from 'vitest';
import { FileLock, isLockError, lock, LockError, readOwner, tryLock, withLock } from '@x/core';
import { fixture, holder, reapAll, start, type Child } from '../helpers/child.js';
import { tempDir } from '../helpers/tmp.js';
import { abortListeners, lockErrorOf, rejectionOf, tick, timerProbe, track, within } from '../helpers/core-util.js';
import { backends, describeBackend } from './describe-backend.js';

afterEach(reapAll);

/** Parses a holder child's `acquired {json}` line. */
function acquired(first: string): { pid: number; path: string; backend: string } {
  expect(first).toMatch(/^acquired /);
  return JSON.parse(first.slice('acquired '.length)) as { pid: number; path: string; backend: string };
}

for (const name of backends) {
  describeBackend(name, (backend) => {
    const opts = { backend };

    test('a lock held by another process excludes us, and ours excludes it', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const { child, first } = await holder('tryLock', p, opts);
      expect(acquired(first)).toMatchObject({ backend, pid: child.proc.pid });

      const err = await lockErrorOf(tryLock(p, opts));
      expect(err.code).toBe('ELOCKED');
      expect(isLockError(err, 'ELOCKED')).toBe(true);
      expect(err.path).toBe(p);
      expect(err.owner?.pid).toBe(child.proc.pid);
      // lock() with a bounded wait is refused too (it times out: still held).
      expect((await lockErrorOf(lock(p, { ...opts, timeout: 50 }))).code).toBe('ETIMEDOUT');
      expect(await child.finish()).toBe(0);

      const held = await tryLock(p, opts);
      expect(held).toBeInstanceOf(FileLock);
      expect(held.backend).toBe(backend);
      expect(held.path).toBe(p);
      const refused = await holder('tryLock', p, opts);
      expect(refused.first).toBe('error ELOCKED');
      await held.release();
      const next = await holder('tryLock', p, opts);
      acquired(next.first);
      expect(await next.child.finish()).toBe(0);
    });

    test('readOwner names the holder', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const { child } = await holder('tryLock', p, opts);
      expect(await readOwner(p)).toMatchObject({ pid: child.proc.pid, backend });
      expect(await child.finish()).toBe(0);
      const held = await tryLock(p, opts);
      expect(await readOwner(p)).toMatchObject({ pid: process.pid, backend });
      await held.release();
    });

    test('lock() waits while another process holds, and gets the lock once it releases', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const { child, first } = await holder('tryLock', p, opts);
      acquired(first);
      const waiting = lock(p, opts);
      const state = track(waiting);
      await tick(100); // a broken lock() would have resolved by now
      expect(state.settled).toBe(false);
      expect(await child.finish()).toBe(0);
      const held = await within(waiting, 15_000, 'lock() after the holder released');
      expect(held.backend).toBe(backend);
      expect(held.path).toBe(p);
      expect((await holder('tryLock', p, opts)).first).toBe('error ELOCKED');
      await held.release();
    });

    test('timeout: a wait that runs out rejects LockError ETIMEDOUT', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const { child, first } = await holder('tryLock', p, opts);
      acquired(first);
      const err = await lockErrorOf(within(lock(p, { ...opts, timeout: 150 }), 15_000, 'lock() with a timeout'));
      expect(err.code).toBe('ETIMEDOUT');
      expect(err.path).toBe(p);
      expect((await lockErrorOf(lock(p, { ...opts, timeout: 0 }))).code).toBe('ETIMEDOUT');
      // The holder was not disturbed.
      expect((await lockErrorOf(tryLock(p, opts))).code).toBe('ELOCKED');
      expect(await child.finish()).toBe(0);
      // A timeout on a free lock does not get in the way.
      const held = await lock(p, { ...opts, timeout: 150 });
      await held.release();
    });

    test('signal: an abort rejects with exactly signal.reason, whatever it is', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const { child, first } = await holder('tryLock', p, opts);
      acquired(first);
      const reasons: unknown[] = [new Error('stop'), 'a string reason', { custom: true }, undefined];
      for (const [i, reason] of reasons.entries()) {
        const ac = new AbortController();
        const waiting = lock(p, { ...opts, signal: ac.signal, timeout: 60_000 });
        if (i % 2 === 0) await tick(30); // abort a wait in progress, or one just started
        if (reason === undefined) ac.abort();
        else ac.abort(reason);
        const err = await within(rejectionOf(waiting), 10_000, 'lock() after abort');
        expect(err).toBe(ac.signal.reason);
        expect(abortListeners(ac.signal)).toBe(0);
      }
      expect((await lockErrorOf(tryLock(p, opts))).code).toBe('ELOCKED');
      expect(await child.finish()).toBe(0);
    });

    test('an already-aborted signal rejects at once with its reason and creates nothing', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const reason = new Error('aborted before the call');
      const signal = AbortSignal.abort(reason);
      expect(await rejectionOf(lock(p, { ...opts, signal }))).toBe(reason);
      expect(await rejectionOf(lock(p, { ...opts, signal, parents: true, timeout: 1000 }))).toBe(reason);
      const fn = vi.fn();
      expect(await rejectionOf(withLock(p, fn, { ...opts, signal }))).toBe(reason);
      expect(fn).not.toHaveBeenCalled();
      expect(await readdir(d.path)).toEqual([]);
      expect(abortListeners(signal)).toBe(0);
    });

    test('release() is idempotent, and a stale handle never releases a later holder', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const held = await tryLock(p, opts);
      await Promise.all([held.release(), held.release()]);
      await held.release();
      const next = await tryLock(p, opts);
      await held.release();
      expect((await lockErrorOf(tryLock(p, opts))).code).toBe('ELOCKED');
      expect((await holder('tryLock', p, opts)).first).toBe('error ELOCKED');
      await next.release();
      await (await tryLock(p, opts)).release();
    });

    test('await using releases at the end of the scope, also when it throws', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      let signal: AbortSignal | undefined;
      {
        await using held = await tryLock(p, opts);
        signal = held.signal;
        expect((await lockErrorOf(tryLock(p, opts))).code).toBe('ELOCKED');
      }
      expect(signal.aborted).toBe(true);
      const boom = new Error('boom');
      const scope = async () => {
        await using held = await tryLock(p, opts);
        signal = held.signal;
        throw boom;
      };
      expect(await rejectionOf(scope())).toBe(boom);
      expect(signal.aborted).toBe(true);
      await (await tryLock(p, opts)).release();
    });

    test('held.signal aborts once, on release, with ERELEASED; a released handle stays released', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const held = await tryLock(p, opts);
      const signal = held.signal;
      expect(signal.aborted).toBe(false);
      const onAbort = vi.fn();
      signal.addEventListener('abort', onAbort);
      await held.release();
      expect(signal.aborted).toBe(true);
      expect(isLockError(signal.reason, 'ERELEASED')).toBe(true);
      await held.release();
      expect(onAbort).toHaveBeenCalledTimes(1);
      expect(held.signal.aborted).toBe(true);
      // A signal first read after the release is born aborted.
      const other = await tryLock(p, opts);
      await other.release();
      expect(other.signal.aborted).toBe(true);
      expect(isLockError(other.signal.reason, 'ERELEASED')).toBe(true);
    });

    test('withLock returns what fn returns, holding the lock while fn runs', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      let seen: FileLock | undefined;
      const value = await withLock(
        p,
        async (held) => {
          seen = held;
          expect(held.backend).toBe(backend);
          expect(held.path).toBe(p);
          expect(held.signal.aborted).toBe(false);
          expect((await holder('tryLock', p, opts)).first).toBe('error ELOCKED');
          return { answer: 42 };
        },
        opts,
      );
      expect(value).toEqual({ answer: 42 });
      expect(seen?.signal.aborted).toBe(true);
      expect(await withLock(p, () => 'sync value', opts)).toBe('sync value');
      await (await tryLock(p, opts)).release();
    });

    test('withLock releases when fn throws or rejects, and rejects with that error', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const boom = new Error('boom');
      let seen: FileLock | undefined;
      const sync = withLock(
        p,
        (held) => {
          seen = held;
          throw boom;
        },
        opts,
      );
      expect(await rejectionOf(sync)).toBe(boom);
      expect(seen?.signal.aborted).toBe(true);
      const async = withLock(
        p,
        async (held) => {
          seen = held;
          await tick(1);
          throw boom;
        },
        opts,
      );
      expect(await rejectionOf(async)).toBe(boom);
      expect(seen?.signal.aborted).toBe(true);
      const next = await holder('tryLock', p, opts);
      acquired(next.first);
      expect(await next.child.finish()).toBe(0);
    });

    test('settled waits leave no timer and no abort listener behind', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const ac = new AbortController();
      const probe = timerProbe();
      try {
        // Uncontended lock() with a timeout and a signal.
        const free = await lock(p, { ...opts, timeout: 60_000, signal: ac.signal });
        expect(abortListeners(ac.signal)).toBe(0);
        await free.release();
        expect(await probe.pending()).toBe(0);

        const { child, first } = await holder('tryLock', p, opts);
        acquired(first);
        // A wait that times out.
        expect((await lockErrorOf(lock(p, { ...opts, timeout: 100, signal: ac.signal }))).code).toBe('ETIMEDOUT');
        expect(abortListeners(ac.signal)).toBe(0);
        expect(await probe.pending()).toBe(0);
        // A wait that is aborted (through another controller) while a long timeout runs.
        const other = new AbortController();
        const aborting = lock(p, { ...opts, timeout: 60_000, signal: other.signal });
        await tick(30);
        other.abort(new Error('stop'));
        await rejectionOf(aborting);
        expect(abortListeners(other.signal)).toBe(0);
        expect(await probe.pending()).toBe(0);
        // A wait that succeeds after the holder releases, with a long timeout and a signal.
        const waiting = lock(p, { ...opts, timeout: 60_000, signal: ac.signal });
        await tick(30);
        expect(await child.finish()).toBe(0);
        const held = await within(waiting, 15_000, 'lock() after the holder released');
        expect(abortListeners(ac.signal)).toBe(0);
        await held.release();
        expect(await probe.pending()).toBe(0);
      } finally {
        probe.stop();
      }
    });

    test('processes contending in a loop are never inside at the same time', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const marker = join(d.path, 'inside');
      const counter = join(d.path, 'counter');
      await writeFile(counter, '0');
      const procs = 3;
      const iterations = 150;
      const children: Child[] = [];
      for (let i = 0; i < procs; i++) {
        children.push(
          start(process.execPath, [
            fixture('core-stress.mjs'),
            p,
            marker,
            counter,
            String(iterations),
            JSON.stringify({ ...opts, pollInterval: 5 }),
          ]),
        );
      }
      for (const c of children) expect(await c.line()).toBe('ready');
      for (const c of children) c.proc.stdin!.write('go\n');
      const reports = await within(Promise.all(children.map((c) => c.line())), 45_000, 'the contending children');
      const doubles = reports.reduce((n, r) => {
        expect(r).toMatch(/^done /);
        return n + (JSON.parse(r.slice(5)) as { doubles: number }).doubles;
      }, 0);
      expect(doubles).toBe(0);
      expect(Number(await readFile(counter, 'utf8'))).toBe(procs * iterations);
      for (const c of children) expect(await c.finish()).toBe(0);
    }, 60_000);

    test('an ELOCKED rejection is a LockError that isLockError recognises', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const held = await tryLock(p, opts);
      const err = await lockErrorOf(tryLock(p, opts));
      expect(err).toBeInstanceOf(Error);
      expect(err).toBeInstanceOf(LockError);
      expect(isLockError(err)).toBe(true);
      expect(isLockError(err, 'ELOCKED')).toBe(true);
      expect(isLockError(err, 'ETIMEDOUT')).toBe(false);
      await held.release();
    });
  });
}
