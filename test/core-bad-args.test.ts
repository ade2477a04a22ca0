/**
 * @x/core bad arguments (docs/contract.md 3.2): every one is a TypeError (or the coded
 * error), async functions report it by rejecting (never a synchronous
 * throw), and nothing is created on disk.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, test, vi } from 'vitest';
import { isProcessAlive, lock, readOwner, tryLock, withLock, type LockOptions } from '@x/core';
import { tempDir } from './helpers/tmp.js';
import { rejectionOf } from './helpers/core-util.js';

type Call = (dir: string, fn: () => unknown) => Promise<unknown>;

// Deliberately ill-typed calls: what a JavaScript caller can pass.
const any = <T>(v: unknown) => v as T;
const opts = (o: unknown) => any<LockOptions>(o);
const at = (dir: string) => join(dir, 'x.lock');

const cases: [string, Call][] = [
  ['tryLock: path is a number', () => tryLock(any<string>(123))],
  ['tryLock: path is empty', () => tryLock('')],
  ['tryLock: path contains NUL', (d) => tryLock(join(d, 'a\0b.lock'))],
  ['tryLock: path is undefined', () => tryLock(any<string>(undefined))],
  ['lock: path is null', () => lock(any<string>(null))],
  ['lock: path is an object', (d) => lock(any<string>({ path: at(d) }))],
  ['withLock: path is a number', (_d, fn) => withLock(any<string>(7), fn)],
  ['tryLock: options is a string', (d) => tryLock(at(d), opts('kernel'))],
  ['tryLock: options is null', (d) => tryLock(at(d), opts(null))],
  ['tryLock: options is a number', (d) => tryLock(at(d), opts(1))],
  ['tryLock: unknown option key', (d) => tryLock(at(d), opts({ foo: 1 }))],
  ['lock: misspelt option key', (d) => lock(at(d), opts({ timout: 100 }))],
  ['tryLock: backend unknown', (d) => tryLock(at(d), opts({ backend: 'ofd' }))],
  ['tryLock: backend not a string', (d) => tryLock(at(d), opts({ backend: 1 }))],
  ['tryLock: shared is a string', (d) => tryLock(at(d), opts({ shared: 'yes' }))],
  ['tryLock: shared is a number', (d) => tryLock(at(d), opts({ shared: 1 }))],
  ['tryLock: parents is a string', (d) => tryLock(at(d), opts({ parents: 'true' }))],
  ['tryLock: removeOnRelease is a string', (d) => tryLock(at(d), opts({ removeOnRelease: 'no' }))],
  ['lock: timeout negative', (d) => lock(at(d), opts({ timeout: -1 }))],
  ['lock: timeout NaN', (d) => lock(at(d), opts({ timeout: NaN }))],
  ['lock: timeout a string', (d) => lock(at(d), opts({ timeout: '100' }))],
  ['lock: pollInterval 0', (d) => lock(at(d), opts({ pollInterval: 0 }))],
  ['lock: pollInterval negative', (d) => lock(at(d), opts({ pollInterval: -5 }))],
  ['tryLock: mode 0o10000', (d) => tryLock(at(d), opts({ mode: 0o10000 }))],
  ['tryLock: mode 1.5', (d) => tryLock(at(d), opts({ mode: 1.5 }))],
  ['tryLock: mode negative', (d) => tryLock(at(d), opts({ mode: -1 }))],
  ['tryLock: mode a string', (d) => tryLock(at(d), opts({ mode: '644' }))],
  ['lock: signal a plain object', (d) => lock(at(d), opts({ signal: {} }))],
  [
    'lock: signal a look-alike',
    (d) => lock(at(d), opts({ signal: { aborted: false, addEventListener() {}, removeEventListener() {} } })),
  ],
  ['tryLock: pid 0', (d) => tryLock(at(d), opts({ pid: 0 }))],
  ['tryLock: pid -1', (d) => tryLock(at(d), opts({ pid: -1 }))],
  ['tryLock: pid 1.5', (d) => tryLock(at(d), opts({ pid: 1.5 }))],
  ["tryLock: pid '12'", (d) => tryLock(at(d), opts({ pid: '12' }))],
  ['tryLock: pid NaN', (d) => tryLock(at(d), opts({ pid: NaN }))],
  ['tryLock: staleAfter negative', (d) => tryLock(at(d), opts({ staleAfter: -1 }))],
  ['tryLock: staleAfter NaN', (d) => tryLock(at(d), opts({ staleAfter: NaN }))],
  ['tryLock: heartbeat == staleAfter', (d) => tryLock(at(d), opts({ staleAfter: 1000, heartbeat: 1000 }))],
  ['tryLock: heartbeat > staleAfter', (d) => tryLock(at(d), opts({ staleAfter: 1000, heartbeat: 5000 }))],
  ['tryLock: onCompromised not a function', (d) => tryLock(at(d), opts({ onCompromised: 'log' }))],
  ['withLock: fn is a string', (d) => withLock(at(d), any<() => void>('run'))],
  ['withLock: fn is undefined', (d) => withLock(at(d), any<() => void>(undefined))],
  ['withLock: bad options', (d, fn) => withLock(at(d), fn, opts({ timeout: -1 }))],
  ['readOwner: path is a number', () => readOwner(any<string>(123))],
  ['readOwner: path is empty', () => readOwner('')],
  ['readOwner: path contains NUL', (d) => readOwner(join(d, 'a\0b'))],
];

test('there are at least 20 bad-argument cases', () => {
  expect(cases.length).toBeGreaterThanOrEqual(20);
});

test.each(cases)('%s: rejects TypeError, no synchronous throw, nothing created', async (_name, call) => {
  await using d = await tempDir();
  const fn = vi.fn();
  let result: unknown;
  expect(() => {
    result = call(d.path, fn);
  }).not.toThrow();
  expect(result).toBeInstanceOf(Promise);
  const err = await rejectionOf(result as Promise<unknown>);
  expect(err).toBeInstanceOf(TypeError);
  expect(fn).not.toHaveBeenCalled();
  expect(await readdir(d.path)).toEqual([]);
});

test('isProcessAlive (synchronous) throws TypeError for a non-number pid or a non-string hostname', () => {
  expect(() => isProcessAlive(any<number>('1'))).toThrow(TypeError);
  expect(() => isProcessAlive(any<number>(undefined))).toThrow(TypeError);
  expect(() => isProcessAlive(process.pid, any<string>(5))).toThrow(TypeError);
});
