/** One temp directory per test, removed afterwards (tmp-promise). */
import { dir } from 'tmp-promise';

export interface TempDir {
  path: string;
  [Symbol.asyncDispose](): Promise<void>;
}

/** `await using d = await tempDir()`: a fresh directory, removed with its contents at scope end. */
export async function tempDir(): Promise<TempDir> {
  const d = await dir({ unsafeCleanup: true, prefix: 'xlock-test-' });
  return { path: d.path, [Symbol.asyncDispose]: () => d.cleanup() };
}
