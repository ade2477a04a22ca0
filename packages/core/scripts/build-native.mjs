#!/usr/bin/env node
// Compiles the kernel-lock addon, native/*.c, with the C compiler directly
// (no node-gyp: it downloads headers it cannot find offline, and a
// binding.gyp at the package root makes npm add an install script).
//
//   node scripts/build-native.mjs             this machine -> build/xlock.node
//                                              (the workspace's `pnpm build`, or
//                                              a consumer building from source)
//   node scripts/build-native.mjs --prebuild  every published target ->
//        [--out <dir>]                         prebuilds/<platform>-<arch>/xlock.<libc>.node
//
// One N-API version (NAPI_VERSION in xlock.h) serves every Node release. The
// published targets and their toolchains (Debian: gcc-aarch64-linux-gnu,
// musl-tools) are listed in `targets` below; the loader that picks one is
// src/platform/native.ts, and docs/installing.md says what users get.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const pkg = dirname(dirname(fileURLToPath(import.meta.url)));
// xlock.c (primitives, shared helpers, module), pool.c (blocking calls on pooled
// threads), wait.c (the waits' N-API side), pidwatch.c, lease.c (lease publish/release),
// create.c (createLocked's create), reclaim.c (a staging entry's reclaim), sweep.c (the sweep's loop), take.c (open+lock+check in one call),
// record.c (the check after a grant and the owner record), tmpfile.c (O_TMPFILE files); xlock.h and pool.h join them.
const sources = [
  'xlock.c',
  'pool.c',
  'wait.c',
  'pidwatch.c',
  'lease.c',
  'create.c',
  'reclaim.c',
  'sweep.c',
  'take.c',
  'record.c',
  'tmpfile.c',
].map((f) => join(pkg, 'native', f));
const warnings = ['-Wall', '-Wextra', '-Wno-unused-parameter'];
const common = ['-std=gnu11', '-O2', '-fPIC', '-fvisibility=hidden', ...warnings];

/** Where node_api.h is: the node-api-headers package (workspace), else the running Node's own headers. */
function headers() {
  const tried = [];
  try {
    const dir = join(dirname(createRequire(import.meta.url).resolve('node-api-headers/package.json')), 'include');
    if (existsSync(join(dir, 'node_api.h'))) return dir;
    tried.push(dir);
  } catch {
    tried.push('node-api-headers (not installed)');
  }
  for (const base of [process.env.npm_config_nodedir, dirname(dirname(process.execPath))]) {
    if (!base) continue;
    const dir = join(base, 'include', 'node');
    if (existsSync(join(dir, 'node_api.h'))) return dir;
    tried.push(dir);
  }
  fail(
    `cannot find node_api.h; tried:\n  ${tried.join('\n  ')}\nInstall Node's headers (they ship with the official Node tarballs).`,
  );
}

function fail(message) {
  console.error(`@x/core: ${message}`);
  process.exit(1);
}

function run(cc, args) {
  const r = spawnSync(cc, args, { stdio: 'inherit' });
  if (r.error?.code === 'ENOENT') fail(`the C compiler '${cc}' is not installed`);
  if (r.status !== 0) fail(`'${cc} ${args.join(' ')}' failed`);
}

/** The musl prebuild must name musl's libc the way Alpine's Node does; musl's libc.so has no soname. */
function muslLink(work) {
  const libc = ['/usr/lib/x86_64-linux-musl/libc.so', '/lib/x86_64-linux-musl/libc.so', '/usr/lib/musl/lib/libc.so'].find(
    existsSync,
  );
  if (!libc) fail('musl-gcc is there but musl libc.so is not (Debian: musl-dev)');
  symlinkSync(libc, join(work, 'libc.musl-x86_64.so.1'));
  return ['-nostdlib', `-L${work}`, '-l:libc.musl-x86_64.so.1', '-lgcc'];
}

/** The published prebuilds. arm64 musl is missing: Debian packages no aarch64 musl toolchain. */
const targets = [
  { dir: 'linux-x64', libc: 'glibc', cc: 'x86_64-linux-gnu-gcc', flags: ['-DXLOCK_GLIBC_COMPAT'] },
  { dir: 'linux-arm64', libc: 'glibc', cc: 'aarch64-linux-gnu-gcc', flags: ['-DXLOCK_GLIBC_COMPAT'] },
  { dir: 'linux-x64', libc: 'musl', cc: 'musl-gcc', flags: [], link: muslLink },
];

const { values } = parseArgs({ options: { prebuild: { type: 'boolean' }, out: { type: 'string' } } });
const include = headers();

if (values.prebuild) {
  const out = resolve(values.out ?? join(pkg, 'prebuilds'));
  const work = mkdtempSync(join(tmpdir(), 'xlock-prebuild-'));
  try {
    for (const t of targets) {
      mkdirSync(join(out, t.dir), { recursive: true });
      const file = join(out, t.dir, `xlock.${t.libc}.node`);
      const link = t.link ? t.link(work) : [];
      run(t.cc, [...common, ...t.flags, `-I${include}`, '-shared', '-o', file, ...sources, ...link]);
      console.log(`@x/core: built ${file}`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
} else {
  const file = join(pkg, 'build', 'xlock.node');
  mkdirSync(dirname(file), { recursive: true });
  // macOS resolves Node's symbols at load time only when told to.
  const shared = process.platform === 'darwin' ? ['-bundle', '-undefined', 'dynamic_lookup'] : ['-shared', '-pthread'];
  run(process.env.CC || 'cc', [...common, `-I${include}`, ...shared, '-o', file, ...sources]);
}
