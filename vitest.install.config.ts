import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

// The consumer installs from packed tarballs (test/install.test.ts), run
// alone after the other tests: see the exclude in vitest.config.ts.
export default defineConfig({ test: { ...base.test, include: ['test/install.test.ts'], exclude: ['**/node_modules/**'] } });
