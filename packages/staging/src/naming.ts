/**
 * Naming of a staging root: which names are entries, lock files, in-flight
 * lock files or the area marker. The one place the sweep and `list()` learn
 * what a name means. Protocol: docs/staging-protocol.md.
 *
 * Two layouts share a root, recognised per name (so one sweep handles a root
 * that xstage and podman/buildah both use; see docs/interop.md):
 *
 *   xstage               lock-<id>  +  <id>/
 *   containers-storage   lock-<id>  +  temp-dir-<id>/   (internal/tempdir)
 *
 * `<id>` is what both writers draw: our 64-bit base-36 part, or Go's
 * os.CreateTemp decimal part (a uint32). A name that fits neither layout
 * (another program's file, `lock-` with an empty or odd id, a directory
 * with capitals or dashes) is never deleted: the sweep reports it as skipped.
 */

/** Prefix of an entry's lock file: `lock-<id>` (both layouts). */
export const LOCK_PREFIX = 'lock-';
/** Prefix of a containers/storage staging directory: `temp-dir-<id>`. */
export const CS_DIR_PREFIX = 'temp-dir-';
/**
 * An empty file `open()` leaves in the root, so that tools (the CLI's
 * `recover` and `status`) can refuse a directory that is not a staging area:
 * a sweep deletes every unlocked entry it finds.
 */
export const AREA_MARKER = '.xstage-area';

/** Who made an entry: xstage (`<id>/`) or containers/storage (`temp-dir-<id>/`). */
export type Layout = 'xstage' | 'containers-storage';

/** An id either writer can draw: base 36 up to 64 bits (ours), or decimal (Go's os.CreateTemp). */
const ID = /^[0-9a-z]{1,13}$/;

/** How the sweep reads one name of the root. */
export type Kind =
  | { kind: 'lock'; id: string }
  | { kind: 'dir'; id: string; layout: Layout }
  | { kind: 'hidden' }
  | { kind: 'ignore' }
  | { kind: 'unknown' };

export function classify(name: string): Kind {
  if (name.startsWith('.')) return /^\.xlock-.+\.tmp$/.test(name) ? { kind: 'hidden' } : { kind: 'ignore' };
  if (name.startsWith(LOCK_PREFIX)) {
    const id = name.slice(LOCK_PREFIX.length);
    return ID.test(id) ? { kind: 'lock', id } : { kind: 'unknown' };
  }
  if (name.startsWith(CS_DIR_PREFIX)) {
    const id = name.slice(CS_DIR_PREFIX.length);
    return ID.test(id) ? { kind: 'dir', id, layout: 'containers-storage' } : { kind: 'unknown' };
  }
  return ID.test(name) ? { kind: 'dir', id: name, layout: 'xstage' } : { kind: 'unknown' };
}

/** The staging directory's name of entry `id` in `layout`. */
export function dirName(id: string, layout: Layout): string {
  return layout === 'xstage' ? id : CS_DIR_PREFIX + id;
}
