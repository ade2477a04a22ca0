/**
 * Commit and stage for build caches (issue 12, items 9 and 10): an existing
 * `dest` can be the normal "already cached" outcome, `dest`'s parent can be
 * created, and `stage()` moves across filesystems the way `mv` does (real
 * tmpfs mounts as the source, and as a full target), never leaving a
 * half-copied file under its final name.
 */
import { StagingArea } from '@x/staging';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { spawnSync } from 'node:child_process';
import { watch } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { rootNames, snapshot } from './helpers/area.js';
import { reapAll, start } from './helpers/child.js';
import { osErrorOf } from './helpers/core-util.js';
import { canMount, tmpfs } from './helpers/mounts.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

describe('commit: ifExists and parents', () => {
  test("ifExists: 'keep' with an existing dest resolves 'existed', leaves dest as it was, discards the staged copy", async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dest = join(d.path, 'cache', 'sha256-1');
    mkdirSync(dest, { recursive: true });
    writeFileSync(join(dest, 'blob'), 'first');
    const before = snapshot(join(d.path, 'cache'));
    const dir = await area.create();
    writeFileSync(join(dir.path, 'blob'), 'second');
    expect(await dir.commit(dest, { ifExists: 'keep' })).toBe('existed');
    expect(snapshot(join(d.path, 'cache'))).toEqual(before);
    expect(rootNames(area.root)).toEqual([]);
    await dir.cleanup(); // a no-op now
  });

  test("ifExists: 'keep' with a free dest commits and resolves 'committed'", async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'staging'));
    mkdirSync(join(d.path, 'cache'));
    const dir = await area.create();
    writeFileSync(join(dir.path, 'blob'), 'x');
    expect(await dir.commit(join(d.path, 'cache', 'a'), { ifExists: 'keep' })).toBe('committed');
    expect(readFileSync(join(d.path, 'cache', 'a', 'blob'), 'utf8')).toBe('x');
    expect(rootNames(area.root)).toEqual([]);
  });

  test('without ifExists an existing dest is still EEXIST, the entry stays held and intact', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dest = join(d.path, 'dest');
    mkdirSync(dest);
    const dir = await area.create();
    writeFileSync(join(dir.path, 'blob'), 'x');
    const err = await osErrorOf(dir.commit(dest));
    expect(err.code).toBe('EEXIST');
    expect(err.path).toBe(dest);
    expect(readFileSync(join(dir.path, 'blob'), 'utf8')).toBe('x');
    await dir.cleanup();
  });

  test('parents: true creates the missing parents of dest; without it, ENOENT', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dest = join(d.path, 'cache', 'ab', 'cd', 'sha256-abcd');
    const dir = await area.create();
    writeFileSync(join(dir.path, 'blob'), 'x');
    expect((await osErrorOf(dir.commit(dest))).code).toBe('ENOENT');
    expect(existsSync(join(d.path, 'cache'))).toBe(false);
    expect(await dir.commit(dest, { parents: true })).toBe('committed');
    expect(readFileSync(join(dest, 'blob'), 'utf8')).toBe('x');
  });

  test('bad options are TypeErrors naming them, and nothing moves', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dir = await area.create();
    const dest = join(d.path, 'dest');
    const any = (o: unknown) => o as never;
    await expect(dir.commit(dest, any({ ifExists: 'replace' }))).rejects.toThrow(/`ifExists`/);
    await expect(dir.commit(dest, any({ parents: 'yes' }))).rejects.toThrow(/`parents`/);
    await expect(dir.commit(dest, any({ ifexists: 'keep' }))).rejects.toThrow(/Unknown option `ifexists`/);
    expect(existsSync(dest)).toBe(false);
    await dir.cleanup();
  });
});

describe.runIf(canMount())('stage() from another filesystem (a tmpfs source)', () => {
  test('a file: copied with its mode and times, the source removed, no temporary left', async () => {
    await using d = await tempDir();
    await using src = tmpfs('size=1m');
    const file = join(src.path, 'layer.tar');
    writeFileSync(file, Buffer.alloc(100_000, 3));
    chmodSync(file, 0o640);
    utimesSync(file, new Date(1_600_000_000_000), new Date(1_600_000_000_000));
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dir = await area.create();
    const staged = await dir.stage(file);
    expect(staged).toBe(join(dir.path, '0-layer.tar'));
    expect(readFileSync(staged).equals(Buffer.alloc(100_000, 3))).toBe(true);
    expect(statSync(staged).mode & 0o7777).toBe(0o640);
    expect(statSync(staged).mtimeMs).toBe(1_600_000_000_000);
    expect(existsSync(file)).toBe(false);
    expect(readdirSync(dir.path)).toEqual(['0-layer.tar']);
    expect(await dir.commit(join(d.path, 'out'))).toBe('committed');
    expect(readFileSync(join(d.path, 'out', '0-layer.tar')).length).toBe(100_000);
  });

  test('a tree with a symlink: copied as is (the link not followed), the source removed', async () => {
    await using d = await tempDir();
    await using src = tmpfs('size=1m');
    const tree = join(src.path, 'rootfs');
    mkdirSync(join(tree, 'etc', 'empty'), { recursive: true });
    writeFileSync(join(tree, 'etc', 'hostname'), 'box\n');
    symlinkSync('/etc/passwd', join(tree, 'etc', 'passwd-link'));
    chmodSync(join(tree, 'etc'), 0o555);
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dir = await area.create();
    const staged = await dir.stage(tree);
    expect(readFileSync(join(staged, 'etc', 'hostname'), 'utf8')).toBe('box\n');
    expect(lstatSync(join(staged, 'etc', 'passwd-link')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(staged, 'etc', 'passwd-link'))).toBe('/etc/passwd');
    expect(statSync(join(staged, 'etc')).mode & 0o7777).toBe(0o555);
    expect(lstatSync(join(staged, 'etc', 'empty')).isDirectory()).toBe(true);
    expect(existsSync(tree)).toBe(false);
    expect(readdirSync(dir.path)).toEqual(['0-rootfs']);
    chmodSync(join(staged, 'etc'), 0o755);
    await dir.cleanup();
  });

  test('a full target filesystem: ENOSPC, the source intact, nothing half-copied left in the entry', async () => {
    await using src = tmpfs('size=1m');
    await using dst = tmpfs('size=128k');
    const file = join(src.path, 'big.bin');
    writeFileSync(file, Buffer.alloc(512 * 1024, 9));
    const before = snapshot(src.path);
    const area = await StagingArea.open(join(dst.path, 'staging'));
    const dir = await area.create();
    const err = await osErrorOf(dir.stage(file));
    expect(err.code).toBe('ENOSPC');
    expect(snapshot(src.path)).toEqual(before);
    expect(readdirSync(dir.path)).toEqual([]);
    await dir.cleanup();
  });

  test('SIGKILLed while copying: never a partial file under its final name, the source intact', async () => {
    await using d = await tempDir();
    await using src = tmpfs('size=80m');
    const file = join(src.path, 'big.bin');
    const data = Buffer.alloc(48 << 20, 5);
    writeFileSync(file, data);
    const root = join(d.path, 'staging');
    await StagingArea.open(root);
    // The child creates its entry, prints its path, waits for "go", then stages.
    const script = `
      import { StagingArea } from '@x/staging';
      import { once } from 'node:events';
      const area = await StagingArea.open(${JSON.stringify(root)});
      const dir = await area.create();
      console.log(dir.path);
      await once(process.stdin, 'data');
      await dir.stage(${JSON.stringify(file)});
      console.log('staged');`;
    const child = start(process.execPath, ['--input-type=module', '-e', script]);
    const entry = await child.line();
    // Killed the moment anything appears in the entry: the hidden copy.
    const appeared = new Promise<void>((resolve) => {
      const w = watch(entry, () => {
        w.close();
        resolve();
      });
    });
    child.proc.stdin!.write('go\n');
    await appeared;
    child.proc.kill('SIGKILL');
    await child.reap();
    const final = join(entry, '0-big.bin');
    if (existsSync(final))
      expect(readFileSync(final).equals(data)).toBe(true); // only ever complete
    else expect(readFileSync(file).equals(data)).toBe(true); // not moved: the source is whole
    expect(readdirSync(entry).filter((n) => n !== '0-big.bin' && !n.startsWith('.stage-'))).toEqual([]);
  });

  test('a FIFO in the source: ENOTSUP before anything is removed', async () => {
    await using d = await tempDir();
    await using src = tmpfs('size=1m');
    mkdirSync(join(src.path, 'tree'));
    writeFileSync(join(src.path, 'tree', 'a'), 'a');
    expect(spawnSync('mkfifo', [join(src.path, 'tree', 'pipe')]).status).toBe(0);
    const before = snapshot(src.path);
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dir = await area.create();
    const err = await osErrorOf(dir.stage(join(src.path, 'tree')));
    expect(err.code).toBe('ENOTSUP');
    expect(snapshot(src.path)).toEqual(before);
    expect(readdirSync(dir.path)).toEqual([]);
    await dir.cleanup();
  });
});
