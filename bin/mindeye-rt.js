#!/usr/bin/env node
// Entry point of the `mindeye-rt` command. The sources are TypeScript, run through tsx so that
// a plain `npm ci` is the whole installation (no build step).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
