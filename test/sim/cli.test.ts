import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/cli/simulate.ts';
import { isMindeyeError } from '../../src/errors.ts';

const BIN = new URL('../../bin/mindeye-rt.js', import.meta.url).pathname;

function simulate(args: string[]) {
  const result = spawnSync(process.execPath, [BIN, 'simulate', ...args], { encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'warn' } });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('simulate command', () => {
  test('--help documents every flag', () => {
    const { status, stdout } = simulate(['--help']);
    assert.equal(status, 0);
    for (const flag of ['--out', '--grid', '--sessions', '--runs-per-session', '--test-runs', '--only', '--runs', '--seed', '--motion-scale', '--no-noise']) {
      assert.ok(stdout.includes(flag), `help mentions ${flag}`);
    }
  });

  test('missing --out is an error', async () => {
    await assert.rejects(run(['--grid', 'epi']), (err: unknown) => isMindeyeError(err) && err.code === 'CLI_USAGE' && /Missing --out/.test(err.message));
  });

  test('bad values name the flag and the value', async () => {
    const out = join(tmpdir(), 'mindeye-sim-cli-never-written');
    await assert.rejects(run(['--out', out, '--grid', 'mni']), /field: --grid\n\s+value: "mni"\n\s+expected: nsd or epi/);
    await assert.rejects(run(['--out', out, '--seed', 'abc']), /field: --seed\n\s+value: "abc"/);
    await assert.rejects(run(['--out', out, '--test-runs', '']), /field: --test-runs/);
    await assert.rejects(run(['--out', out, '--volumes', '10']), /Invalid command line[\s\S]*--volumes/);
    await assert.rejects(run(['--out', out, 'extra']), /Invalid command line/);
    assert.ok(!existsSync(out), 'nothing was written');
  });

  test('writes one test run and reports it', () => {
    const out = mkdtempSync(join(tmpdir(), 'mindeye-sim-cli-'));
    try {
      const { status, stdout } = simulate(['--out', out, '--sessions', '0', '--test-runs', '1', '--seed', '11', '--motion-scale', '0.5']);
      assert.equal(status, 0);
      assert.match(stdout, /simulated data/);
      assert.match(stdout, /session 1 run 1 \(test\): 63 trials/);
      const marker = JSON.parse(readFileSync(join(out, 'mindeye-rt.json'), 'utf8'));
      assert.equal(marker.seed, 11);
      assert.equal(marker.motionScale, 0.5);
      assert.equal(marker.simulated, true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
