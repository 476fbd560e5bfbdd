// Command-line checks of `mindeye-rt train-demo`: flag parsing, bad input and the Python guard.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { help, listRuns, parseOptions, trainDemo } from '../../src/cli/train-demo.ts';
import { MindeyeError } from '../../src/errors.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'mindeye-rt.js');

/** Creates a folder with just enough of the NSD layout for the option checks (no real data). */
function fakeDataset(): string {
  const dir = mkdtempSync(join(tmpdir(), 'train-demo-cli-'));
  const func = join(dir, 'nsddata_timeseries', 'ppdata', 'subj01', 'func1pt8mm', 'design');
  mkdirSync(func, { recursive: true });
  for (const name of ['design_session02_run01.tsv', 'design_session01_run12.tsv', 'design_session01_run02.tsv', 'notes.txt']) {
    writeFileSync(join(func, name), '0\n');
  }
  const roi = join(dir, 'nsddata', 'ppdata', 'subj01', 'func1pt8mm', 'roi');
  mkdirSync(roi, { recursive: true });
  writeFileSync(join(roi, 'nsdgeneral.nii.gz'), '');
  return dir;
}

function expectUsageError(argv: string[], field: string): void {
  assert.throws(() => parseOptions(argv), (err: unknown) => {
    assert.ok(err instanceof MindeyeError);
    assert.equal(err.code, 'CLI_USAGE');
    assert.equal(err.details.field, field);
    return true;
  });
}

test('defaults write models/demo with seed 1', () => {
  const options = parseOptions([]);
  assert.equal(options.out, join(ROOT, 'models', 'demo'));
  assert.equal(options.seed, 1);
  assert.equal(options.quick, false);
  assert.equal(options.betas, 'record');
  assert.equal(options.photos, join(ROOT, 'data', 'photos'));
  assert.equal(options.threads, 2);
});

test('invalid seed is rejected', () => {
  for (const seed of ['-1', 'abc', '1.5', '']) expectUsageError([`--seed=${seed}`], '--seed');
});

test('invalid threads and betas are rejected', () => {
  expectUsageError(['--threads', '0'], '--threads');
  expectUsageError(['--betas', 'glmsingle'], '--betas');
});

test('unknown flag and positional are rejected', () => {
  assert.throws(() => parseOptions(['--epochs', '3']), (err: unknown) => err instanceof MindeyeError && err.code === 'CLI_USAGE');
  expectUsageError(['extra'], '(positional)');
});

test('data folder must be a simulated dataset', () => {
  const empty = mkdtempSync(join(tmpdir(), 'train-demo-cli-'));
  try {
    assert.throws(() => parseOptions(['--data', empty]), (err: unknown) => {
      assert.ok(err instanceof MindeyeError);
      assert.equal(err.details.field, '--data');
      assert.match(err.message, /nsdgeneral\.nii\.gz/);
      assert.match(err.message, /mindeye-rt simulate/);
      return true;
    });
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('quick without out is rejected', () => {
  expectUsageError(['--quick'], '--out');
  assert.equal(parseOptions(['--quick', '--out', join(tmpdir(), 'quick-model')]).quick, true);
});

test('out path that is a file is rejected', () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-demo-cli-'));
  try {
    writeFileSync(join(dir, 'model'), 'not a directory');
    expectUsageError(['--out', join(dir, 'model')], '--out');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('missing photo folder is rejected', () => {
  assert.throws(() => parseOptions(['--photos', join(tmpdir(), 'no-such-photo-folder')]), (err: unknown) => {
    assert.ok(err instanceof MindeyeError);
    assert.equal(err.details.field, '--photos');
    return true;
  });
});

test('runs are listed in session and run order', () => {
  const dir = fakeDataset();
  try {
    assert.deepEqual(listRuns(dir), [{ session: 1, run: 2 }, { session: 1, run: 12 }, { session: 2, run: 1 }]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('missing Python fails before any work', async () => {
  const dir = fakeDataset();
  const out = join(dir, 'model');
  try {
    const options = parseOptions(['--data', dir, '--out', out, '--python', join(dir, 'no-python'), '--betas', 'lss']);
    await assert.rejects(trainDemo(options), (err: unknown) => {
      assert.ok(err instanceof MindeyeError);
      assert.equal(err.code, 'FIT_INVALID');
      assert.equal(err.details.field, '--python');
      assert.match(err.message, /scripts\/setup\.sh/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('help documents every flag', () => {
  for (const flag of ['--out', '--seed', '--data', '--quick', '--betas', '--photos', '--work', '--threads', '--python']) {
    assert.ok(help.includes(flag), `help lacks ${flag}`);
  }
});

test('command exits 1 with the error on stderr', () => {
  const result = spawnSync(process.execPath, [BIN, 'train-demo', '--seed', 'x'], { encoding: 'utf8', cwd: ROOT });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /CLI_USAGE/);
  assert.match(result.stderr, /--seed/);
});
