#!/usr/bin/env node
// Runs every test/**/*.test.ts file with Node's built-in test runner (through tsx), after
// type-checking the project. Node 20's runner does not expand globs, so this script lists the
// files. Pass file paths or name fragments to run a subset: `npm test -- glm nifti`.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

function listTests(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...listTests(path));
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out.sort();
}

const filters = process.argv.slice(2);
let files = listTests(join(root, 'test'));
if (filters.length > 0) files = files.filter((f) => filters.some((s) => relative(root, f).includes(s)));

if (filters.length === 0 && process.env.MINDEYE_SKIP_TYPECHECK !== '1') {
  const tsc = spawnSync('npx', ['tsc', '--noEmit', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  if (tsc.status !== 0) {
    console.error('Type check failed (npx tsc --noEmit); fix the errors above.');
    process.exit(1);
  }
}

const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=1', ...files],
  { cwd: root, stdio: 'inherit', env: { ...process.env, MINDEYE_LOG_LEVEL: process.env.MINDEYE_LOG_LEVEL ?? 'error' } },
);
process.exit(result.status ?? 1);
