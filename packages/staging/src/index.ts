/// <reference types="node" preserve="true" />
export { isLockError, LockError, type LockErrorCode } from '@x/core';
export { createAndLock, tryLockPath, type StagingLockFile, type StagingLockOptions } from './lockfile.js';
export { StagingArea, type ListOptions, type StagingAreaOptions, type StagingEntry } from './area.js';
export { type EntryLockService } from './ownership-etcd.js';
export { type CommitOptions, type CommitResult, type StagingDir } from './entry.js';
export { type RecoverError, type RecoverOptions, type RecoverProgress, type RecoverReport, type RecoverSkip } from './report.js';
export { type Layout } from './naming.js';
