/// <reference types="node" preserve="true" />
export { EtcdLock } from './lock.js';
export { EtcdLocks, type EtcdHolder } from './locks.js';
export { type EtcdLockOptions, type EtcdLocksOptions, type TlsOptions } from './options.js';
