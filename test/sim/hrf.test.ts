import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { boxcarResponse, spmHrf, spmHrfIntegral, trialRegressor } from '../../src/sim/hrf.ts';

function argMax(f: (t: number) => number, from: number, to: number, step: number): number {
  let best = from;
  for (let t = from; t <= to; t += step) if (f(t) > f(best)) best = t;
  return best;
}

describe('SPM canonical HRF', () => {
  test('peaks between 4.5 and 6 s', () => {
    const peakSec = argMax(spmHrf, 0, 32, 0.01);
    assert.ok(peakSec >= 4.5, `peak at ${peakSec} s`);
    assert.ok(peakSec <= 6, `peak at ${peakSec} s`);
  });

  test('has an undershoot deepest near 15-16 s', () => {
    const troughSec = argMax((t) => -spmHrf(t), 8, 32, 0.01);
    assert.ok(troughSec >= 14, `trough at ${troughSec} s`);
    assert.ok(troughSec <= 17, `trough at ${troughSec} s`);
    assert.ok(spmHrf(troughSec) < 0);
    assert.ok(Math.abs(spmHrf(troughSec)) < 0.2 * spmHrf(5), 'undershoot is small next to the peak');
  });

  test('is zero before onset and after 32 s', () => {
    assert.equal(spmHrf(-1), 0);
    assert.equal(spmHrf(0), 0);
    assert.equal(spmHrf(33), 0);
  });

  test('integrates to 5/6', () => {
    let trapezoid = 0;
    const dt = 0.001;
    for (let t = 0; t < 32; t += dt) trapezoid += ((spmHrf(t) + spmHrf(t + dt)) / 2) * dt;
    assert.ok(Math.abs(trapezoid - 5 / 6) < 1e-3, `numerical integral ${trapezoid}`);
    assert.ok(Math.abs(spmHrfIntegral(32) - trapezoid) < 1e-4, `closed form ${spmHrfIntegral(32)}`);
  });

  test('boxcar response equals the numerical convolution', () => {
    for (const tSec of [1, 3, 5.5, 8, 14, 20]) {
      let convolved = 0;
      const du = 0.0005;
      for (let u = 0; u < 3; u += du) convolved += spmHrf(tSec - u - du / 2) * du;
      assert.ok(Math.abs(convolved - boxcarResponse(tSec, 3)) < 1e-4, `t = ${tSec}: ${convolved} vs ${boxcarResponse(tSec, 3)}`);
    }
  });
});

describe('trial regressor', () => {
  test('has peak 1 and starts at the onset volume', () => {
    const trSec = 4 / 3;
    const x = trialRegressor(12, 3, trSec, 226);
    for (let i = 0; i <= 9; i++) assert.equal(x[i], 0, `volume ${i} is before the onset`);
    assert.ok(x[10] > 0);
    const max = Math.max(...x);
    assert.ok(max <= 1 + 1e-12, `sampled peak ${max}`);
    assert.ok(max > 0.95, `sampled peak ${max}`);
    const peakVolume = x.indexOf(max);
    const peakSec = peakVolume * trSec - 12;
    assert.ok(peakSec >= 4, `peak ${peakSec} s after onset`);
    assert.ok(peakSec <= 8, `peak ${peakSec} s after onset`);
  });
});
