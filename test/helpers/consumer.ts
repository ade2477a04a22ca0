/**
 * Consumer installs from packed tarballs, as a user of the published
 * packages gets them: `pnpm pack` of both packages (which builds the
 * prebuilds, see packages/core's prepack), a scratch project outside the
 * workspace, and a PATH on which there is no C compiler, make or linker.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** What builds native code: hidden from the consumer's PATH. */
const builders = /gcc|g\+\+|clang|(^|-)(cc|c\+\+|c89|c99|cpp|tcc)(-\d+)?$|^(make|gmake|cmake|ld|ld\.bfd|ld\.gold|as|node-gyp)$/;

/** A bin directory mirroring PATH without any compiler, make or linker; returns it as a PATH value. */
export function noCompilerPath(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const seen = new Set<string>();
  for (const from of (process.env.PATH ?? '').split(delimiter)) {
    let names: string[];
    try {
      names = readdirSync(from);
    } catch {
      continue;
    }
    for (const name of names) {
      if (seen.has(name) || builders.test(name)) continue;
      try {
        if (!statSync(join(from, name)).isFile()) continue;
      } catch {
        continue;
      }
      seen.add(name);
      symlinkSync(join(from, name), join(dir, name));
    }
  }
  return dir;
}

/** Runs a command; never throws for a non-zero exit. */
export function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number },
): SpawnSyncReturns<string> {
  return spawnSync(command, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    encoding: 'utf8',
    timeout: options.timeout ?? 300_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** `${stdout}${stderr}` for assertion messages. */
export const output = (r: SpawnSyncReturns<string>): string => `exit ${r.status}\n${r.stdout}\n${r.stderr}`;

/** Packs @x/core and @x/staging into `dest`; returns the two tarball paths. */
export function packWorkspace(dest: string): { core: string; staging: string } {
  const paths: Record<string, string> = {};
  for (const name of ['core', 'staging']) {
    const r = run('npx', ['--yes', 'pnpm@10.34.9', 'pack', '--pack-destination', dest], {
      cwd: join(repoRoot, 'packages', name),
    });
    if (r.status !== 0) throw new Error(`pnpm pack of packages/${name} failed:\n${output(r)}`);
    const file = readdirSync(dest).find((f) => f.startsWith(`x-${name}-`) && f.endsWith('.tgz'));
    if (!file) throw new Error(`no tarball for packages/${name} in ${dest}`);
    paths[name] = join(dest, file);
  }
  return { core: paths.core!, staging: paths.staging! };
}
