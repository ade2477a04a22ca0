import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    // Packing rebuilds packages/core's prebuilds/ and dist/ in place, which
    // the loader of every other test's processes would pick up half-written:
    // the consumer installs run alone, after the rest (vitest.install.config.ts).
    exclude: ['test/install.test.ts', '**/node_modules/**'],
    // Forks, not threads: tests spawn processes, send signals and load a
    // native addon; a crash must not take the runner's other files with it.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Flakes are bugs: no retries.
    retry: 0,
  },
});
