/**
 * Recovery's report: what `recover()` returns and `onProgress` receives,
 * and how a sweep (over lock files or etcd: ownership*.ts) fills it in,
 * its lists capped so that memory does not grow with failures either.
 */
/** The running counts {@link RecoverOptions.onProgress} receives. */
export interface RecoverProgress {
  /** Entries examined so far (see {@link RecoverReport.scanned}). */
  scanned: number;
  /** Entries reclaimed so far (a dry run: that would be). */
  removed: number;
  /** Entries left alone because they are held. */
  live: number;
  /** Bytes of regular files freed so far (a dry run: that would be). */
  bytesFreed: number;
  /** Entries that failed so far. */
  errors: number;
}

/** The running counts of a report, as `onProgress` receives them (whichever ownership swept). */
export function progressOf(report: RecoverReport): RecoverProgress {
  const { scanned, removed, live, bytesFreed } = report;
  return { scanned, removed, live, bytesFreed, errors: report.errors.length + report.errorsOmitted };
}

/**
 * How many failures and skipped names a {@link RecoverReport} lists; the
 * rest are only counted, so that a sweep's memory does not grow with the
 * number of entries (docs/staging-protocol.md, "Recovery").
 */
export const REPORT_LIST_LIMIT = 1000;

/** An empty report. */
export function emptyReport(): RecoverReport {
  return { scanned: 0, removed: 0, live: 0, bytesFreed: 0, errors: [], errorsOmitted: 0, skipped: [], skippedOmitted: 0 };
}

/** Counts a failed entry (`scanned` is the caller's): listed while the list has room. */
export function noteError(report: RecoverReport, error: RecoverError): void {
  if (report.errors.length < REPORT_LIST_LIMIT) report.errors.push(error);
  else report.errorsOmitted++;
}

/** Notes a skipped name: listed while the list has room. */
export function noteSkip(report: RecoverReport, skip: RecoverSkip): void {
  if (report.skipped.length < REPORT_LIST_LIMIT) report.skipped.push(skip);
  else report.skippedOmitted++;
}

/** Options of {@link StagingArea.recover}. */
export interface RecoverOptions {
  /** Report what would be reclaimed; delete nothing and create no lock file. @defaultValue `false` */
  dryRun?: boolean | undefined;
  /** Called after each entry with the running counts. An exception it throws ends the sweep and rejects. */
  onProgress?: ((progress: RecoverProgress) => void) | undefined;
  /** Stops the sweep: entries in progress finish, then the promise rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
}

/** One entry that could not be recovered. */
export interface RecoverError {
  /** The path that failed (the staging directory, or the lock file). */
  path: string;
  /** The error, with its errno `code` for OS errors. */
  error: Error;
}

/** A name of the root that recovery left alone without examining it as an entry. */
export interface RecoverSkip {
  /** The path. */
  path: string;
  /** Why it was not touched. */
  reason: string;
}

/** What {@link StagingArea.recover} did. */
export interface RecoverReport {
  /**
   * Staging entries examined, each once: by its `lock-<id>`, or by its
   * `<id>` directory when it has no lock file. Hidden in-flight lock files
   * (`.xlock-*.tmp`) are deleted when free but not counted. Always
   * `scanned = removed + live + errors.length + errorsOmitted`; entries that
   * finish while the sweep looks at them are not counted at all.
   */
  scanned: number;
  /** Entries reclaimed (a dry run: that would be). */
  removed: number;
  /** Entries left alone because their lock is held. */
  live: number;
  /** Sum of the sizes of the regular files deleted (a dry run: that would be). */
  bytesFreed: number;
  /**
   * The entries that failed, in the order they failed: the first 1000; the
   * others are counted in {@link RecoverReport.errorsOmitted} (the report's
   * memory does not grow with the number of entries).
   */
  errors: RecoverError[];
  /** Entries that failed beyond the 1000 listed in {@link RecoverReport.errors}. */
  errorsOmitted: number;
  /**
   * Names left alone because recovery cannot prove them abandoned, not
   * counted in `scanned`: names that fit neither layout (see
   * docs/staging-protocol.md, "Naming"), and a containers/storage
   * `temp-dir-<id>` without its `lock-<id>` (containers/storage's
   * CreateAndLock can leave a live entry without its lock file, podman#29641).
   * The first 1000; the others are counted in
   * {@link RecoverReport.skippedOmitted}.
   */
  skipped: RecoverSkip[];
  /** Names skipped beyond the 1000 listed in {@link RecoverReport.skipped}. */
  skippedOmitted: number;
}
