/**
 * Issue 10: depend on it from anywhere. Both packages are packed (the
 * prebuilds are built by @x/core's prepack), installed from the tarballs into
 * a scratch project outside the workspace on a PATH without a C compiler,
 * with npm (default and --ignore-scripts), pnpm 10 and the newest pnpm (its
 * default strict build settings). Each install must exit 0 without asking
 * for an approval, load the prebuild, exclude a second process, and never
 * let a process without the addon become a second holder. Needs the npm
 * registry (for fs-extra, @types/node and pnpm itself).
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { noCompilerPath, output, packWorkspace, repoRoot, run } from './helpers/consumer.js';
import { haveTools } from './helpers/tools.js';

const enabled = haveTools('x86_64-linux-gnu-gcc', 'aarch64-linux-gnu-gcc', 'musl-gcc', 'git');
const work = mkdtempSync(join(tmpdir(), 'xlock-install-'));
let tarballs: { core: string; staging: string };
let PATH: string;

beforeAll(() => {
  if (!enabled) return;
  mkdirSync(join(work, 'packs'));
  tarballs = packWorkspace(join(work, 'packs'));
  PATH = noCompilerPath(join(work, 'bin'));
}, 300_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

const installers: Record<string, string[]> = {
  npm: ['npm', 'install', '--no-audit', '--no-fund'],
  'npm --ignore-scripts': ['npm', 'install', '--no-audit', '--no-fund', '--ignore-scripts'],
  'pnpm 10': ['npx', '--yes', 'pnpm@10.34.9', 'install'],
  'pnpm latest': ['npx', '--yes', 'pnpm@latest', 'install'],
};

/** A scratch consumer project depending on both tarballs. */
function scratch(name: string): string {
  const dir = join(work, name.replace(/\W+/g, '-'));
  mkdirSync(dir);
  const deps = { '@x/core': `file:${tarballs.core}`, '@x/staging': `file:${tarballs.staging}` };
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({
      name: 'consumer',
      private: true,
      type: 'module',
      dependencies: deps,
      pnpm: { overrides: { '@x/core': deps['@x/core'] } },
    }),
  );
  // pnpm >= 10 also reads overrides from its workspace file; @x/staging's own
  // dependency on @x/core@0.1.0 must resolve to the tarball, not the registry.
  writeFileSync(join(dir, 'pnpm-workspace.yaml'), `overrides:\n  '@x/core': '${deps['@x/core']}'\n`);
  return dir;
}

describe.runIf(enabled)('installing the packed tarballs on a PATH without a C compiler', () => {
  test('the PATH really has no compiler', () => {
    for (const tool of ['cc', 'gcc', 'make', 'g++']) {
      expect(run('sh', ['-c', `command -v ${tool}`], { cwd: work, env: { PATH } }).status).not.toBe(0);
    }
  });

  for (const [name, command] of Object.entries(installers)) {
    test(`${name}: exit 0, no approval asked, prebuild loaded, two processes excluded, no second holder without the addon`, () => {
      const dir = scratch(name);
      const install = run(command[0]!, command.slice(1), { cwd: dir, env: { PATH } });
      expect(install.status, output(install)).toBe(0);
      expect(`${install.stdout}${install.stderr}`).not.toMatch(/Ignored build scripts|approve-builds|IGNORED_BUILDS|node-gyp/i);
      // Copied in, so that '@x/core' resolves from the project, as in a user's code.
      copyFileSync(join(repoRoot, 'test/fixtures/consumer/check.mjs'), join(dir, 'check.mjs'));
      const check = run('node', ['check.mjs'], { cwd: dir, env: { PATH } });
      expect(check.status, output(check)).toBe(0);
      const result = JSON.parse(check.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
      expect(result).toMatchObject({
        available: true,
        kind: 'ofd',
        backend: 'kernel',
        exclusion: 'ELOCKED',
        withoutAddon: 'ENOTSUP',
        autoWithoutAddon: 'ENOTSUP',
        after: 'acquired kernel',
      });
      expect(result.file).toMatch(/node_modules\/.*@x\/core\/prebuilds\/linux-x64\/xlock\.glibc\.node$/);
      const demo = run(join(dir, 'node_modules/.bin/xstage'), ['demo', '--workers', '2', '--artifacts', '2'], {
        cwd: dir,
        env: { PATH },
      });
      expect(demo.status, output(demo)).toBe(0);
    }, 300_000);
  }

  test("a consumer's tsc (strict, exactOptionalPropertyTypes, no skipLibCheck, no @types/node of its own) accepts the types", () => {
    const dir = scratch('tsc');
    const install = run('npm', ['install', '--no-audit', '--no-fund'], { cwd: dir, env: { PATH } });
    expect(install.status, output(install)).toBe(0);
    copyFileSync(join(repoRoot, 'test/fixtures/consumer/use.ts'), join(dir, 'use.ts'));
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          exactOptionalPropertyTypes: true,
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          target: 'ES2022',
          lib: ['ES2023', 'ESNext.Disposable'],
          noEmit: true,
          skipLibCheck: false,
        },
        files: ['use.ts'],
      }),
    );
    const tsc = run('node', [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', dir], { cwd: dir, env: { PATH } });
    expect(tsc.status, output(tsc)).toBe(0);
  }, 300_000);

  test('the repository itself installs with the newest pnpm', () => {
    const clone = join(work, 'repo');
    const c = run('git', ['clone', '--quiet', repoRoot, clone], { cwd: work });
    expect(c.status, output(c)).toBe(0);
    const install = run('npx', ['--yes', 'pnpm@latest', 'install'], { cwd: clone });
    expect(install.status, output(install)).toBe(0);
  }, 300_000);
});
