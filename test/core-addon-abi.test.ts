/**
 * The loader refuses a kernel-lock addon from another version of @x/core
 * (its `abi` differs: XLOCK_ABI in native/xlock.h). Such an addon would take
 * the arguments it knows and ignore the rest: an older one resolves a wait
 * without the post-wait check the JS side now relies on (docs/waiting.md).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { output, repoRoot } from './helpers/consumer.js';
import { tempDir } from './helpers/tmp.js';
import { haveTools } from './helpers/tools.js';

const core = join(repoRoot, 'packages/core');

/** Compiles the addon's sources, as another version would have them with `abi` (`-DXLOCK_ABI=<abi>`). */
function buildAddon(file: string, abi?: number): void {
  const headers = join(createRequire(join(core, 'package.json')).resolve('node-api-headers/package.json'), '../include');
  // Every C file of the addon, so that a new one is never forgotten here.
  const native = join(core, 'native');
  const sources = readdirSync(native)
    .filter((f) => f.endsWith('.c'))
    .map((f) => join(native, f));
  const r = spawnSync(
    'cc',
    [
      '-std=gnu11',
      '-O0',
      '-fPIC',
      '-shared',
      '-pthread',
      ...(abi === undefined ? [] : [`-DXLOCK_ABI=${abi}`]),
      `-I${headers}`,
      '-o',
      file,
      ...sources,
    ],
    {
      encoding: 'utf8',
    },
  );
  expect(r.status, output(r)).toBe(0);
}

/** What a child process with XLOCK_ADDON=`addon` sees: kernelLocks, and what `'auto'` does. */
const probe = `
import { kernelLocks, tryLock } from '@x/core';
let auto;
try {
  await tryLock(process.argv[1], { backend: 'auto' });
  auto = 'locked';
} catch (err) {
  auto = err.code;
}
console.log(JSON.stringify({ ...kernelLocks, auto }));
`;

/** Runs the probe in a child process whose addon is `addon` (XLOCK_ADDON). */
function probeWith(addon: string, lockPath: string) {
  return spawnSync(process.execPath, ['--input-type=module', '-e', probe, lockPath], {
    cwd: repoRoot,
    env: { ...process.env, XLOCK_ADDON: addon },
    encoding: 'utf8',
  });
}

test.runIf(haveTools('cc'))(
  'an addon from another version (XLOCK_ADDON) is not loaded: the reason says so, and auto rejects ENOTSUP',
  async () => {
    await using d = await tempDir();
    const old = join(d.path, 'xlock-old.node');
    buildAddon(old, 1);
    const r = probeWith(old, join(d.path, 'a.lock'));
    expect(r.status, output(r)).toBe(0);
    const seen = JSON.parse(r.stdout) as { available: boolean; kind: unknown; reason: string; auto: string };
    expect(seen.available).toBe(false);
    expect(seen.kind).toBe(null);
    expect(seen.reason).toContain(`XLOCK_ADDON=${old}`);
    expect(seen.reason).toContain('from another version of @x/core (addon ABI 1, this version needs ');
    expect(seen.reason).toContain(`rebuild it with \`node ${join(core, 'scripts/build-native.mjs')}\``);
    expect(seen.auto).toBe('ENOTSUP');

    // The same sources with the current ABI load: the refusal is about the version only.
    const current = join(d.path, 'xlock-current.node');
    buildAddon(current);
    const ok = probeWith(current, join(d.path, 'b.lock'));
    expect(ok.status, output(ok)).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ available: true, file: current, auto: 'locked' });
  },
);
