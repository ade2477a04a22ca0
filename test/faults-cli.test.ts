/**
 * `xstage` driven as an operator would, with mistakes (issue 12, item 8): a
 * typo never reads as an answer, a file where a staging root is expected is
 * an error for `status` as for `recover`, option mistakes are caught before
 * the lock path is looked at, and messages quote what they name.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { tempDir } from './helpers/tmp.js';
import { BIN } from './helpers/xstage.js';

function xstage(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every quote in `text` is closed. */
const balanced = (text: string) => (text.match(/'/g) ?? []).length % 2 === 0 && (text.match(/"/g) ?? []).length % 2 === 0;

test('status of a lock path whose directory does not exist: 66 and a message, not "missing"', async () => {
  await using d = await tempDir();
  const r = xstage('status', join(d.path, 'no-such-dir', 'x.lock'));
  expect(r.code).toBe(66);
  expect(r.stdout).toBe('');
  expect(r.stderr).toContain(`no such directory '${join(d.path, 'no-such-dir')}'`);
  expect(existsSync(join(d.path, 'no-such-dir'))).toBe(false);
});

test('status of a missing lock file in an existing directory is still an answer', async () => {
  await using d = await tempDir();
  const r = xstage('status', join(d.path, 'x.lock'));
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('missing');
});

test('a regular file where a staging root is expected: 66 for status as for recover', async () => {
  await using d = await tempDir();
  const file = join(d.path, 'notes.txt');
  writeFileSync(file, 'not a lock file\n');
  for (const args of [
    ['recover', file],
    ['status', `${file}/`],
    ['status', '--json', `${file}/`],
  ]) {
    const r = xstage(...args);
    expect(r.code, args.join(' ')).toBe(66);
    expect(r.stdout, args.join(' ')).toBe('');
  }
  expect(readdirSync(d.path)).toEqual(['notes.txt']);
});

test('status of a free lock file of another program (content, no record of ours) reports it free, exit 0, and leaves it as it was', async () => {
  await using d = await tempDir();
  const file = join(d.path, 'storage.lock');
  writeFileSync(file, 'podman-last-writer-token');
  const r = xstage('status', file);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toBe(`${file}: free (no owner record of ours in it)\n`);
  expect(readFileSync(file, 'utf8')).toBe('podman-last-writer-token');
});

test('an option after the lock path is a usage error, caught before the lock is taken', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const r = xstage('run', p, '--timeout', '1', '--', 'true');
  expect(r.code).toBe(64);
  expect(r.stderr).toContain("option '--timeout' after <lockpath>");
  expect(existsSync(p)).toBe(false);
});

test('a bad --timeout is reported before the lock path is looked at', async () => {
  await using d = await tempDir();
  mkdirSync(join(d.path, 'locks'));
  for (const bad of ['abc', '-1', '1e3', 'Infinity', '']) {
    const r = xstage('run', `--timeout=${bad}`, join(d.path, 'no-such-dir', 'x.lock'), '--', 'true');
    expect(r.code, bad).toBe(64);
    expect(r.stderr, bad).toContain('--timeout');
    expect(balanced(r.stderr), r.stderr).toBe(true);
  }
});

test.each(['run', 'status', 'recover', 'demo'])('%s: an unknown option names it with balanced quotes', (command) => {
  const r = xstage(command, '--bogus', '/tmp/x');
  expect(r.code).toBe(64);
  expect(r.stderr).toContain("unknown option '--bogus'");
  expect(balanced(r.stderr), r.stderr).toBe(true);
});
