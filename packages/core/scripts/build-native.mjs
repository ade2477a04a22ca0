// Builds the kernel-lock addon from native/xlock.c at install time, offline.
//
// Why not a bare `node-gyp rebuild`: without a header directory node-gyp
// downloads Node's headers (no network here), and pnpm >= 12 does not pass
// `nodedir` from .npmrc to its node-gyp. So we find the headers ourselves:
// npm_config_nodedir when the package manager sets it, else the prefix of the
// running node when it ships include/node/node_api.h (Debian's /usr, nvm, the
// official tarballs).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(dirname(fileURLToPath(import.meta.url)));

function nodeDir() {
  const fromEnv = process.env.npm_config_nodedir;
  if (fromEnv && existsSync(join(fromEnv, 'include', 'node', 'node_api.h'))) return fromEnv;
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  return fromEnv; // let node-gyp say what is missing
}

function nodeGyp() {
  const tried = [];
  const fromEnv = process.env.npm_config_node_gyp;
  if (fromEnv) {
    if (existsSync(fromEnv)) return fromEnv;
    tried.push(fromEnv);
  }
  // npm bundles node-gyp next to itself.
  const npmDir = join(dirname(dirname(process.execPath)), 'lib', 'node_modules', 'npm');
  const bundled = join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(bundled)) return bundled;
  tried.push(bundled);
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    tried.push('node-gyp (require.resolve)');
  }
  console.error(`@x/core: cannot find node-gyp; tried:\n  ${tried.join('\n  ')}`);
  process.exit(1);
}

const args = [nodeGyp(), 'rebuild'];
const dir = nodeDir();
if (dir) args.push(`--nodedir=${dir}`);
const res = spawnSync(process.execPath, args, { cwd: here, stdio: 'inherit' });
if (res.status !== 0) {
  console.error(
    '@x/core: building the kernel-lock addon failed. It needs a C compiler, make, python3 ' +
      "and Node's headers (include/node/node_api.h). Without it only backend 'lease' works.",
  );
}
process.exit(res.status ?? 1);
