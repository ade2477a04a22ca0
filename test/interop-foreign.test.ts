/**
 * Foreign lock files (issue 11 item 1, docs/interop.md): a kernel or flock
 * lock writes its owner record only into an empty file or one holding one of
 * our records; another program's bytes (podman's last-writer token, a pid
 * file) stay byte for byte, and removeOnRelease never deletes them. And
 * (issue 13 item 3) a holder re-taking a file whose record already names it
 * does not rewrite it, nor read it when the file's modification time still
 * carries the tag its writer set (native/xlock.c, record_tag).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { lock, readOwner, tryLock } from '@x/core';
import { reapAll } from './helpers/child.js';
import { straceNode } from './helpers/strace.js';
import { haveTools } from './helpers/tools.js';
import { canMount, ext4Image } from './helpers/mounts.js';
import { tempDir } from './helpers/tmp.js';
import { goChild, useCsHelper } from './helpers/interop.js';

afterEach(reapAll);

for (const backend of ['kernel', 'flock'] as const) {
  describe(`backend '${backend}'`, () => {
    const contents: [string, Buffer][] = [
      ['a 64-byte last-writer token (containers/storage)', randomBytes(64)],
      ['a pid file (nftban)', Buffer.from('4242\n')],
      ['JSON of another program', Buffer.from('{"pid":4242,"owner":"other"}\n')],
      ['one byte', Buffer.from('x')],
    ];
    for (const [what, bytes] of contents) {
      test(`${what} stays byte for byte through tryLock, lock and removeOnRelease`, async () => {
        await using d = await tempDir();
        const p = join(d.path, 'storage.lock');
        writeFileSync(p, bytes);
        const before = statSync(p);
        await (await tryLock(p, { backend })).release();
        await (await lock(p, { backend, timeout: 5000 })).release();
        await (await tryLock(p, { backend, removeOnRelease: true })).release();
        await (await tryLock(p, { backend, shared: true, removeOnRelease: true })).release();
        expect(readFileSync(p).equals(bytes)).toBe(true);
        expect(statSync(p).mtimeMs).toBe(before.mtimeMs);
      });
    }

    test('an empty file gets our record, and removeOnRelease deletes our own file', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      writeFileSync(p, '');
      const held = await tryLock(p, { backend });
      expect((await readOwner(p))?.pid).toBe(process.pid);
      expect((await readOwner(p))?.backend).toBe(backend);
      await held.release();
      await (await tryLock(p, { backend, removeOnRelease: true })).release();
      expect(existsSync(p)).toBe(false);
    });

    test("another holder's record is replaced by ours", async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const other = `{"v":1,"backend":"${backend}","pid":1,"hostname":"elsewhere","createdAt":1}\n`;
      writeFileSync(p, other + 'x'.repeat(200));
      await using _held = await tryLock(p, { backend });
      const owner = await readOwner(p);
      expect(owner?.pid).toBe(process.pid);
      expect(readFileSync(p, 'utf8')).not.toContain('elsewhere');
      expect(readFileSync(p, 'utf8').endsWith('}\n')).toBe(true);
    });

    test('re-taking a lock whose record already names us does not rewrite the file', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      await (await tryLock(p, { backend })).release();
      const first = readFileSync(p);
      const firstMtime = statSync(p).mtimeMs;
      // A later millisecond, so a rewritten record would differ in createdAt.
      const t = Date.now();
      while (Date.now() === t);
      await (await tryLock(p, { backend })).release();
      await (await lock(p, { backend })).release();
      expect(readFileSync(p).equals(first)).toBe(true);
      expect(statSync(p).mtimeMs).toBe(firstMtime);
    });

    test('a record rewritten by another holder since our write is read and replaced, even at the same length', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      await (await tryLock(p, { backend })).release();
      const ours = readFileSync(p, 'utf8');
      // Another holder's record of exactly our length (a pid of as many digits).
      const other = ours.replace(`"pid":${process.pid},`, `"pid":${'9'.repeat(String(process.pid).length)},`);
      expect(other).not.toBe(ours);
      expect(other.length).toBe(ours.length);
      writeFileSync(p, other);
      await using _held = await tryLock(p, { backend });
      expect((await readOwner(p))?.pid).toBe(process.pid);
      expect(readFileSync(p, 'utf8')).not.toContain(`"pid":${'9'.repeat(String(process.pid).length)},`);
    });

    test.runIf(haveTools('touch'))(
      "a tagged time copied onto another program's file of the same size does not make it ours",
      async () => {
        await using d = await tempDir();
        const ours = join(d.path, 'ours.lock');
        await (await tryLock(ours, { backend })).release(); // written and tagged
        const theirs = join(d.path, 'theirs.lock');
        const bytes = Buffer.alloc(statSync(ours).size, 'x');
        writeFileSync(theirs, bytes);
        expect(spawnSync('touch', ['-r', ours, theirs]).status).toBe(0);
        expect(statSync(theirs, { bigint: true }).mtimeNs).toBe(statSync(ours, { bigint: true }).mtimeNs);
        await (await tryLock(theirs, { backend, removeOnRelease: true })).release();
        expect(readFileSync(theirs).equals(bytes)).toBe(true);
      },
    );

    test.runIf(haveTools('strace', 'mkfs.ext4') && canMount())(
      'where times keep whole seconds (ext4 with 128-byte inodes) a re-take reads the record and never re-tags',
      async () => {
        await using m = ext4Image(['-I', '128']);
        const p = join(m.path, 'x.lock');
        const script = `
import { tryLock } from '@x/core';
for (let i = 0; i < 20; i++) await (await tryLock(process.argv[1], { backend: '${backend}' })).release();
`;
        const onLock = straceNode('pread64,pwrite64,utimensat', script, [p], { paths: true }).lines.filter((l) =>
          l.includes(`${p}>`),
        );
        // One write, and the tag tried once after it (the time keeps no nanoseconds: it never holds).
        expect(onLock.filter((l) => l.includes('pwrite64(')).length).toBe(1);
        expect(onLock.filter((l) => l.includes('utimensat(')).length).toBe(1);
        expect(onLock.filter((l) => l.includes('pread64(')).length).toBe(19);
        expect((await readOwner(p))?.backend).toBe(backend);
      },
    );

    test.runIf(haveTools('strace'))('re-taking a file as we left it reads nothing (its mtime carries our tag)', async () => {
      await using d = await tempDir();
      const p = join(d.path, 'x.lock');
      const script = `
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { tryLock } from '@x/core';
const p = process.argv[1];
const cycle = async () => (await tryLock(p, { backend: '${backend}' })).release();
await cycle();
// Our record, but untagged, as a wait's grant leaves it: the same bytes
// written again (write(2), not pwrite), at a time with nanoseconds.
const bytes = readFileSync(p);
do writeFileSync(p, bytes);
while (statSync(p, { bigint: true }).mtimeNs % 1000n === 0n);
for (let i = 0; i < 20; i++) await cycle();
`;
      const onLock = straceNode('pread64,pwrite64', script, [p], { paths: true }).lines.filter((l) => l.includes(`${p}>`));
      // The first take writes the record into the empty file; after the rewrite, one take reads
      // it (and tags it again); the 19 others neither read nor write.
      expect(onLock.filter((l) => l.includes('pwrite64(')).length).toBe(1);
      expect(onLock.filter((l) => l.includes('pread64(')).length).toBe(1);
    });
  });
}

describe("containers/storage's own lock code", () => {
  const cs = useCsHelper();
  const go = cs.enabled;

  test.skipIf(!go)(
    "Go's Modified() sees no change after we lock and release its lock file (podman's last-writer token)",
    async () => {
      await using d = await tempDir();
      const p = join(d.path, 'storage.lock');
      const { child, first } = await goChild(cs.path, 'touch', p);
      expect(first).toBe('touched');
      const token = readFileSync(p);
      expect(token.length).toBe(64);
      await (await tryLock(p)).release();
      await (await tryLock(p, { removeOnRelease: true })).release();
      expect(readFileSync(p).equals(token)).toBe(true);
      child.proc.stdin!.write('check\n');
      expect(await child.line()).toBe('modified false');
      expect(await child.finish()).toBe(0);
    },
  );
});
