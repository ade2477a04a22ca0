/** The lease backend (placeholder until the lease issue lands). */
import { LockError } from '../errors.js';
import type { Checked } from './options.js';

/** A held lease. */
export interface Lease {
  release(): Promise<void>;
}

export function acquireLease(
  path: string,
  _o: Checked,
  _pid: number,
  _wait: (() => AbortSignal) | undefined,
  _lost: (error: LockError) => void,
): Promise<Lease> {
  return Promise.reject(new LockError('ENOTSUP', path, "backend 'lease' is not implemented yet"));
}
