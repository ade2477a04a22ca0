export { isLockError, LockError, type LockErrorCode } from '@x/core';
