/**
 * Outside programs a test needs (go, etcd, flock(1), qemu...). On a machine
 * without one, its tests skip and say why; under CI (`XLOCK_REQUIRE_TOOLS=1`,
 * set by `.ci/run`, which installs them) a missing tool fails instead, so a
 * broken install can never pass as a skip.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** Where `name` is on PATH (or the absolute path itself), or undefined. */
export function which(name: string): string | undefined {
  if (name.startsWith('/')) return existsSync(name) ? name : undefined;
  const r = spawnSync('sh', ['-c', `command -v -- "$1"`, 'sh', name], { encoding: 'utf8' });
  const out = r.stdout.trim();
  return r.status === 0 && out ? out : undefined;
}

/**
 * Checks that every tool in `names` exists.
 * @returns `true` when all are there; `false` (skip) when one is missing and
 * tools are not required.
 * @throws when one is missing and `XLOCK_REQUIRE_TOOLS=1`.
 */
export function haveTools(...names: string[]): boolean {
  const missing = names.filter((n) => which(n) === undefined);
  if (missing.length === 0) return true;
  const msg = `missing tools: ${missing.join(', ')} (CI installs them: see .ci/run)`;
  if (process.env.XLOCK_REQUIRE_TOOLS === '1') throw new Error(msg);
  console.warn(`skipping: ${msg}`);
  return false;
}
