/// <reference types="node" preserve="true" />
export { EtcdLock, EtcdLocks, type EtcdHolder } from './locks.js';
export { type EtcdLockOptions, type EtcdLocksOptions } from './options.js';
