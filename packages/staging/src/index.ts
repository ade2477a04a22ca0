export { isLockError, LockError, type LockErrorCode } from '@x/core';
export { createAndLock, tryLockPath, type StagingLockFile, type StagingLockOptions } from './lockfile.js';
export {
  StagingArea,
  type CommitOptions,
  type ListOptions,
  type RecoverError,
  type RecoverOptions,
  type RecoverProgress,
  type RecoverReport,
  type StagingAreaOptions,
  type StagingDir,
  type StagingEntry,
} from './area.js';
