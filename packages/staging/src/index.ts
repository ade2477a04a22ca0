export { isLockError, LockError, type LockErrorCode } from '@x/core';
export { createAndLock, tryLockPath, type StagingLockFile, type StagingLockOptions } from './lockfile.js';
