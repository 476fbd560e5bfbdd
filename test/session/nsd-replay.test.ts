import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nsdPaths, nsdSource } from '../../src/ingest/nsd.ts';
import { LazyImgBrick } from '../../src/ingest/stimuli.ts';
import { runSession } from '../../src/session/run.ts';
import { DEFAULT_PROCESSING } from '../../src/session/options.ts';
import { writeNsdFixture, type NsdFixture } from '../helpers/nsd-fixture.ts';
import { ROOT } from '../helpers/data.ts';

let fixture: NsdFixture;
const ref = () => ({ root: fixture.root, subject: 1, session: 1, run: 1 });

before(async () => {
  fixture = await writeNsdFixture(mkdtempSync(join(tmpdir(), 'nsd-fixture-')));
});

test('nsd replay processes all 226 volumes at max speed', () => {
  const report = join(fixture.root, 'report.json');
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'replay', '--nsd-root', fixture.root, '--subject', '1', '--session', '1', '--run', '1',
    '--speed', 'max', '--no-dashboard', '--report', report], { encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.equal(rep.summary.volumesReceived, 226);
  assert.equal(rep.summary.volumesProcessed, 226);
  assert.equal(rep.summary.volumesDropped, 0);
  assert.equal(rep.run.trialCount, fixture.trials);
  assert.equal(rep.run.volumeCount, 226);
  assert.ok(Math.abs(rep.run.trSec - 4 / 3) < 1e-6, `TR ${rep.run.trSec}`);
  assert.ok(rep.summary.latencyMs.preprocess.p95 > 0, 'preprocess latency reported');
  console.log(`NSD fixture replay: peak RSS ${rep.summary.peakRssMb} MB, ${rep.summary.realtimeFactor.toFixed(1)}x real time, preprocess p95 ${rep.summary.latencyMs.preprocess.p95.toFixed(1)} ms`);
  // The whole run would take 316 MB as int16 (632 MB as float32) on top of a ~150 MB baseline, so
  // this bound catches a run read at once while leaving room for collection delays under load.
  assert.ok(rep.summary.peakRssMb < 420, `peak RSS ${rep.summary.peakRssMb} MB (no model loaded)`);
});

test('first volume enters before the file is read', async () => {
  let firstAtBytes = -1;
  const { source } = nsdSource(ref(), { onFirstVolume: (bytes) => { firstAtBytes = bytes; } });
  let volumes = 0;
  await runSession({
    source, processing: { ...DEFAULT_PROCESSING, maskFile: nsdPaths(ref()).roi, maskRule: 'value == 1' }, device: 'cpu', speed: { kind: 'max' },
    onEvent: (e) => { if (e.type === 'volume') volumes++; },
  });
  const size = statSync(nsdPaths(ref()).timeseries).size;
  assert.equal(volumes, 226);
  assert.ok(firstAtBytes > 0, 'the first volume was released');
  assert.ok(firstAtBytes < size / 4, `first volume after ${firstAtBytes} of ${size} compressed bytes`);
});

test('nsd design trials sit at onset TRs', async () => {
  const { source } = nsdSource(ref());
  const seen: number[] = [];
  await runSession({
    source, processing: { ...DEFAULT_PROCESSING, maskFile: nsdPaths(ref()).roi }, device: 'cpu', speed: { kind: 'max' },
    onEvent: (e) => { if (e.type === 'run-info') for (const t of e.trials ?? []) seen.push(t.onsetSec); },
  });
  assert.equal(seen.length, fixture.trials);
  for (const onset of seen) {
    const tr = onset / (4 / 3);
    assert.ok(Math.abs(tr - Math.round(tr)) < 1e-9, `onset ${onset} s on a TR`);
    assert.equal(Math.round(tr) % 3, 0, `onset ${onset} s on a slot boundary`);
  }
});

test('imgBrick row is the 73k id minus one', async () => {
  const brick = new LazyImgBrick(nsdPaths(ref()).stimuli);
  try {
    const img = (await brick.image('3'))!;
    const row = 2;
    assert.equal(img.width, 425);
    assert.equal(img.rgb.length, 425 * 425 * 3);
    assert.equal(img.rgb[0], (row * 425 * 425 * 3 * 31 + row * 97) & 255);
    assert.equal(await brick.image('0'), undefined, 'id 0 is not an image');
    assert.equal(await brick.image(String(fixture.images + 1)), undefined, 'past the last row');
    const jpeg = (await brick.jpeg('1'))!;
    assert.deepEqual([...jpeg.subarray(0, 2)], [0xff, 0xd8], 'JPEG magic');
  } finally {
    await brick.close();
  }
});

test('imgBrick without the dataset is reported', async () => {
  const bad = join(fixture.root, 'not-hdf5.hdf5');
  writeFileSync(bad, 'not an HDF5 file');
  const brick = new LazyImgBrick(bad);
  try {
    await assert.rejects(brick.image('1'), /Could not read the stimulus file[\s\S]*not-hdf5\.hdf5/);
  } finally {
    await brick.close();
  }
});

test('design with the wrong row count is rejected', () => {
  const bad = join(fixture.root, 'bad-design.tsv');
  writeFileSync(bad, '0\n'.repeat(200));
  const paths = nsdPaths(ref());
  const r = spawnSync('cp', [paths.design, paths.design + '.orig']);
  assert.equal(r.status, 0);
  writeFileSync(paths.design, '0\n'.repeat(200));
  try {
    assert.throws(() => nsdSource(ref()), (err: Error) => {
      assert.match(err.message, /design file does not match/);
      assert.match(err.message, /design_session01_run01\.tsv/);
      assert.match(err.message, /value: 200/);
      assert.match(err.message, /226 \(one per volume\) or 225/);
      return true;
    });
  } finally {
    spawnSync('cp', [paths.design + '.orig', paths.design]);
  }
});
