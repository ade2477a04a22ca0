/**
 * Test hooks: points where a test can pause an acquisition to force an
 * interleaving deterministically (the unlink race of docs/contract.md 3.3 item 2, the
 * stale-lease takeover). Not public API; reached through the `@x/core/testing`
 * export. Each hook costs one property check when unset.
 */
export interface TestHooks {
  /** After the lock file is opened, before the lock is requested. */
  afterOpen?: ((path: string) => void | Promise<void>) | undefined;
  /**
   * createLocked, under a hidden name (no `O_TMPFILE`): after the hidden
   * file is created, before it is locked (synchronous: the creation path
   * never yields).
   */
  afterCreate?: ((hidden: string) => void) | undefined;
  /** Lease: a waiter found the lease held and starts to wait for its next look (synchronous). */
  leaseNap?: ((path: string) => void) | undefined;
  /** Lease: after a lease was judged stale, before it is claimed by rename. */
  beforeTakeover?: ((path: string) => void | Promise<void>) | undefined;
  /**
   * Lease: right after a step that leaves a side file (synchronous), so a
   * test can crash the process at exactly that point: `claimed` (a takeover
   * won its claim), `broken` (it moved the stale file aside), `released` (a
   * release moved the lease file aside).
   */
  leaseStep?: ((step: 'claimed' | 'broken' | 'released', side: string) => void) | undefined;
  /**
   * Lease: publish through a temporary side file even where `O_TMPFILE`
   * works, as on filesystems without it (see lease-publish.ts).
   */
  leaseNoTmpfile?: boolean | undefined;
  /**
   * Lease: link an `O_TMPFILE` file through /proc/self/fd, as kernels before
   * 6.10 need, rather than with `AT_EMPTY_PATH`.
   */
  leaseLinkViaProc?: boolean | undefined;
  /**
   * createLocked: create under a hidden name even where `O_TMPFILE` works,
   * as on filesystems without it (see kernel-create.ts).
   */
  createNoTmpfile?: boolean | undefined;
  /**
   * createLocked: link the `O_TMPFILE` file through /proc/self/fd, as
   * kernels before 6.10 need, rather than with `AT_EMPTY_PATH`.
   */
  createLinkViaProc?: boolean | undefined;
}

export const hooks: TestHooks = {};
