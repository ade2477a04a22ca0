// How each method takes a lock, shared by the parent and the children.
// Every function resolves a `release()` function.
import { lock, tryLock } from '@x/core';
import fsnx from 'fs-native-extensions';
import plf from 'proper-lockfile';
import { closeSync, constants as fsc, openSync } from 'node:fs';

/**
 * proper-lockfile waiting as a user would set it up: retry practically
 * forever, backing off from 1 ms to at most 10 ms (factor 2).
 */
export const PLF_WAIT = { realpath: false, retries: { retries: 10, forever: true, minTimeout: 1, maxTimeout: 10 } };

function fsnxOpen(path) {
  return openSync(path, fsc.O_RDWR | fsc.O_CREAT, 0o644);
}

function fsnxRelease(fd) {
  return () => {
    fsnx.unlock(fd);
    closeSync(fd);
  };
}

/** Take the lock, waiting while it is held. */
export const waiting = {
  async ours(path, options) {
    const held = await lock(path, options);
    return () => held.release();
  },
  /** A fresh descriptor + fs-native-extensions' waiting call (a dedicated thread), as its README shows. */
  async fsnx(path) {
    const fd = fsnxOpen(path);
    await fsnx.waitForLock(fd);
    return fsnxRelease(fd);
  },
  /** The same, trying without waiting first (what ours does inside lock()). */
  async fsnxTry(path) {
    const fd = fsnxOpen(path);
    if (!fsnx.tryLock(fd)) await fsnx.waitForLock(fd);
    return fsnxRelease(fd);
  },
  plf(path, options) {
    return plf.lock(path, { ...PLF_WAIT, ...options });
  },
};

/** Take the lock without waiting (it must be free). */
export const holding = {
  async ours(path, options) {
    const held = await tryLock(path, options);
    return () => held.release();
  },
  async fsnx(path) {
    const fd = fsnxOpen(path);
    if (!fsnx.tryLock(fd)) throw new Error(`fs-native-extensions: '${path}' is busy`);
    return fsnxRelease(fd);
  },
  plf(path, options) {
    return plf.lock(path, { realpath: false, ...options });
  },
};
