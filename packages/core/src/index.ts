/// <reference types="node" preserve="true" />
export { LockError, isLockError, type LockErrorCode, type LockErrorOptions } from './errors.js';
export { createLocked, FileLock, lock, tryLock, withLock, type CreateLockedOptions, type LockOptions } from './lock.js';
export { isProcessAlive, readOwner, type LockHolder, type LockOwner } from './owner.js';
export { kernelLocks } from './platform/native.js';
