/**
 * Naming of a staging root: which names are entries, lock files, in-flight
 * lock files or the area marker. The one place the sweep and `list()` learn
 * what a name means. Protocol: docs/staging-protocol.md.
 */

/** Prefix of an entry's lock file: `lock-<id>`. */
export const LOCK_PREFIX = 'lock-';
/**
 * An empty file `open()` leaves in the root, so that tools (the CLI's
 * `recover` and `status`) can refuse a directory that is not a staging area:
 * a sweep deletes every unlocked entry it finds.
 */
export const AREA_MARKER = '.xstage-area';

/** How the sweep reads one name of the root. */
export type Kind = { kind: 'lock'; id: string } | { kind: 'dir'; id: string } | { kind: 'hidden' } | { kind: 'ignore' };

export function classify(name: string): Kind {
  if (name.startsWith('.')) return /^\.xlock-.+\.tmp$/.test(name) ? { kind: 'hidden' } : { kind: 'ignore' };
  if (name.startsWith(LOCK_PREFIX)) {
    const id = name.slice(LOCK_PREFIX.length);
    // `lock-`, `lock-.`, `lock-..` would name the root or its parent.
    return id === '' || id.startsWith('.') ? { kind: 'ignore' } : { kind: 'lock', id };
  }
  return { kind: 'dir', id: name };
}
