#!/usr/bin/env node
// Committed launcher so the bin exists before the TypeScript build.
import '../dist/cli.js';
