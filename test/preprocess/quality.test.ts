import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMindeyeError } from '../../src/errors.ts';
import type { MotionParams } from '../../src/events.ts';
import { intensityMask } from '../../src/preprocess/motion.ts';
import { QualityMonitor } from '../../src/preprocess/quality.ts';
import { framewiseDisplacement } from '../../src/preprocess/rigid.ts';
import { EPI_PYNEAL, EPI_SIEMENS, loadSeries, motion } from './motion-fixtures.ts';

const siemens = loadSeries(EPI_SIEMENS);
const pyneal = loadSeries(EPI_PYNEAL);
const shape = siemens.header.shape;
const brain = intensityMask(siemens.volumes[2]);

/** Steady-state Siemens volumes 4 and 5 (0.2 mm apart) alternating, with deterministic 1% noise: a 10-volume run. */
function steadyRun(): Float32Array[] {
  const run: Float32Array[] = [];
  let seed = 11;
  for (let r = 0; r < 10; r++) {
    const base = siemens.volumes[4 + (r % 2)];
    run.push(Float32Array.from(base, (v) => {
      seed = (seed * 16807) % 2147483647;
      return v * (1 + 0.01 * ((seed / 2147483647) * 2 - 1));
    }));
  }
  return run;
}

function rmsDiff(a: Float32Array, b: Float32Array, mask: Uint8Array): number {
  let sum = 0, n = 0;
  for (let i = 0; i < a.length; i++) if (mask[i]) { sum += (a[i] - b[i]) ** 2; n++; }
  return Math.sqrt(sum / n);
}

test('FD computed from motion and flagged over 0.5 mm', () => {
  const monitor = new QualityMonitor({ shape, dvarsMask: brain });
  const motions: MotionParams[] = [motion(0, 0, 0, 0, 0, 0), motion(0.1, 0, 0.05, 0.05, 0, 0), motion(0.5, 0.1, 0.05, 0.05, 0.2, 0)];
  const results = motions.map((m, v) => monitor.update(siemens.volumes[2 + v], m));
  assert.equal(results[0].fdMm, 0);
  assert.ok(Math.abs(results[1].fdMm - framewiseDisplacement(motions[0], motions[1])) < 1e-12);
  assert.ok(!results[1].flags.includes('fd'));
  assert.ok(Math.abs(results[2].fdMm - framewiseDisplacement(motions[1], motions[2])) < 1e-12);
  assert.ok(results[2].flags.includes('fd'), `FD ${results[2].fdMm}`);
  // Without motion (correction off) FD stays 0.
  const off = new QualityMonitor({ shape });
  off.update(siemens.volumes[2]);
  assert.equal(off.update(siemens.volumes[3]).fdMm, 0);
});

test('DVARS matches a direct computation', () => {
  const monitor = new QualityMonitor({ shape, dvarsMask: brain });
  const first = monitor.update(siemens.volumes[3]);
  assert.equal(first.dvars, 0);
  const second = monitor.update(siemens.volumes[4]);
  const expected = rmsDiff(siemens.volumes[3], siemens.volumes[4], brain);
  assert.ok(Math.abs(second.dvars - expected) < 1e-6 * expected);
  let sum3 = 0, sum4 = 0, n = 0;
  for (let i = 0; i < brain.length; i++) if (brain[i]) { sum3 += siemens.volumes[3][i]; sum4 += siemens.volumes[4][i]; n++; }
  const runMean = (sum3 / n + sum4 / n) / 2;
  assert.ok(Math.abs(second.dvarsPct - (100 * expected) / runMean) < 1e-6);
});

test('global signal jump flagged by standardized DVARS', () => {
  const monitor = new QualityMonitor({ shape, dvarsMask: brain, dvarsThreshold: 1.5 });
  // Volume 2 with fresh 1 % noise each time: a still head.
  let seed = 5;
  const noisy = (scale: number): Float32Array => Float32Array.from(siemens.volumes[2], (v) => {
    seed = (seed * 16807) % 2147483647;
    return v * scale * (1 + 0.01 * ((seed / 2147483647) * 2 - 1));
  });
  const first = monitor.update(noisy(1));
  assert.ok(Number.isNaN(first.dvarsStd));
  for (let v = 1; v < 6; v++) {
    const result = monitor.update(noisy(1));
    assert.ok(!result.flags.includes('dvars'), `volume ${v}: standardized DVARS ${result.dvarsStd}`);
    if (v >= 4) assert.ok(Math.abs(result.dvarsStd - 1) < 0.2, `volume ${v}: standardized DVARS ${result.dvarsStd}`);
  }
  const jumped = monitor.update(noisy(1.03));
  assert.ok(jumped.flags.includes('dvars'), `standardized DVARS ${jumped.dvarsStd}`);
  assert.ok(jumped.dvarsStd > 3, `standardized DVARS ${jumped.dvarsStd}`);
  assert.ok(jumped.dvarsPct > 3, `DVARS ${jumped.dvarsPct.toFixed(2)} %`);
  assert.ok(jumped.dvarsPct < 4, `DVARS ${jumped.dvarsPct.toFixed(2)} %`);
});

test('slice spike flagged on the right slice', () => {
  const monitor = new QualityMonitor({ shape, dvarsMask: brain, spikeZThreshold: 5, spikeWarmupVolumes: 5 });
  const run = steadyRun();
  for (let v = 0; v < 8; v++) {
    const result = monitor.update(run[v]);
    assert.ok(!result.flags.includes('spike'), `volume ${v}: z ${result.spikeZ.toFixed(1)} on slice ${result.spikeSlice}`);
  }
  // An RF spike brightens slice 17 by 20 %.
  const spiked = run[8].slice();
  const plane = shape[0] * shape[1];
  for (let i = 17 * plane; i < 18 * plane; i++) spiked[i] *= 1.2;
  const result = monitor.update(spiked);
  assert.ok(result.flags.includes('spike'), `z ${result.spikeZ.toFixed(1)}`);
  assert.equal(result.spikeSlice, 17);
  // The spiked volume stays out of the slice statistics, so the next volume is clean.
  assert.ok(!monitor.update(run[9]).flags.includes('spike'));
});

test('tSNR map matches a two-pass computation', () => {
  const monitor = new QualityMonitor({ shape, dvarsMask: brain });
  const run = steadyRun();
  for (let v = 0; v < run.length; v++) {
    monitor.update(run[v]);
    if (v !== 2 && v !== run.length - 1) continue;
    // Readable at any time: compare after 3 volumes and after all of them.
    const seen = run.slice(0, v + 1);
    const tsnr = monitor.tsnrMap();
    const meanMap = monitor.meanMap();
    const stdMap = monitor.stdMap();
    for (let i = 0; i < brain.length; i += 7) {
      let mean = 0;
      for (const vol of seen) mean += vol[i];
      mean /= seen.length;
      let ss = 0;
      for (const vol of seen) ss += (vol[i] - mean) ** 2;
      const sd = Math.sqrt(ss / (seen.length - 1));
      assert.ok(Math.abs(meanMap[i] - mean) <= 1e-4 * Math.abs(mean) + 1e-4, `mean at ${i}`);
      assert.ok(Math.abs(stdMap[i] - sd) <= 1e-4 * sd + 1e-4, `std at ${i}`);
      const expected = sd > 0 ? mean / sd : 0;
      assert.ok(Math.abs(tsnr[i] - expected) <= 1e-3 * Math.abs(expected) + 1e-3, `tSNR at ${i}: ${tsnr[i]} vs ${expected}`);
    }
  }
  const median = monitor.medianTsnr();
  assert.ok(median > 5, `median tSNR ${median}`);
  assert.ok(median < 500, `median tSNR ${median}`);
  assert.equal(monitor.volumeCount, run.length);
});

test('NaN and all-zero volumes flagged and kept out of the maps', () => {
  const monitor = new QualityMonitor({ shape, dvarsMask: brain });
  monitor.update(siemens.volumes[2]);
  monitor.update(siemens.volumes[3]);
  const before = monitor.meanMap();
  const zero = monitor.update(new Float32Array(siemens.volumes[2].length), motion(0, 0, 0, 0, 0, 0));
  assert.deepEqual(zero.flags, ['all-zero']);
  assert.equal(zero.dvars, 0);
  assert.deepEqual(monitor.meanMap(), before);
  const withNan = siemens.volumes[4].slice();
  withNan[1000] = Number.NaN;
  withNan[2000] = Number.NEGATIVE_INFINITY;
  const nan = monitor.update(withNan);
  assert.deepEqual(nan.flags, ['nan']);
  assert.ok(Number.isFinite(nan.dvars));
  assert.ok(nan.dvars > 0);
  // DVARS skipped the all-zero volume: it compares with volume 3.
  const withNanClean = siemens.volumes[4].slice();
  withNanClean[1000] = siemens.volumes[3][1000];
  withNanClean[2000] = siemens.volumes[3][2000];
  assert.ok(Math.abs(nan.dvars - rmsDiff(siemens.volumes[3], withNanClean, brain)) < 0.05 * nan.dvars);
  assert.ok(monitor.tsnrMap().every(Number.isFinite));
  assert.ok(Math.abs(monitor.meanMap()[1000] - before[1000]) < 1e-3, 'NaN voxel left out of the mean');
  assert.equal(monitor.volumeCount, 4);
});

test('masked values tracked in mask order', () => {
  const indices = Int32Array.from([...brain.keys()].filter((i) => brain[i]));
  const monitor = new QualityMonitor({ shape, indices });
  const run = steadyRun();
  for (let v = 0; v < 8; v++) monitor.update(Float32Array.from(indices, (i) => run[v][i]));
  const spiked = Float32Array.from(indices, (i) => run[8][i]);
  const plane = shape[0] * shape[1];
  indices.forEach((index, n) => { if (Math.floor(index / plane) === 20) spiked[n] *= 1.2; });
  const result = monitor.update(spiked, null, ['jump']);
  // A 20 % brighter slice also raises DVARS far above its median.
  assert.deepEqual(result.flags.sort(), ['dvars', 'jump', 'spike']);
  assert.equal(result.spikeSlice, 20);
  assert.equal(monitor.tsnrMap().length, indices.length);
});

test('flags passed in kept without duplicates', () => {
  const monitor = new QualityMonitor({ shape: pyneal.header.shape });
  const result = monitor.update(pyneal.volumes[0], null, ['jump', 'nan']);
  assert.deepEqual(result.flags, ['jump', 'nan']);
  const withNan = pyneal.volumes[1].slice();
  withNan[5] = Number.NaN;
  assert.deepEqual(monitor.update(withNan, null, ['nan']).flags, ['nan']);
});

test('invalid settings and inputs rejected', () => {
  const pShape = pyneal.header.shape;
  assert.throws(() => new QualityMonitor({ shape: pShape, fdThresholdMm: -1 }), /Invalid quality threshold[\s\S]*field: fdThresholdMm[\s\S]*value: -1/);
  assert.throws(() => new QualityMonitor({ shape: pShape, spikeZThreshold: Number.NaN }), /field: spikeZThreshold/);
  assert.throws(() => new QualityMonitor({ shape: pShape, dvarsThreshold: 0 }), /field: dvarsThreshold/);
  assert.throws(() => new QualityMonitor({ shape: pShape, dvarsMask: new Uint8Array(10) }), (err: unknown) => isMindeyeError(err) && err.code === 'MASK_GRID_MISMATCH');
  assert.throws(() => new QualityMonitor({ shape: pShape, dvarsMask: new Uint8Array(pyneal.volumes[0].length) }), (err: unknown) => isMindeyeError(err) && err.code === 'MASK_EMPTY');
  assert.throws(() => new QualityMonitor({ shape: pShape, indices: Int32Array.of(0, -1) }), /indices\[1\][\s\S]*value: -1/);
  const monitor = new QualityMonitor({ shape: pShape });
  assert.throws(() => monitor.update(new Float32Array(7)), (err: unknown) => isMindeyeError(err) && err.code === 'VOLUME_GRID_MISMATCH' && /value: 7/.test(err.message));
});
