import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readNifti } from '../../src/io/nifti.ts';
import { readBidsEvents } from '../../src/io/tsv.ts';
import { loadMask, applyMask } from '../../src/preprocess/mask.ts';
import { HrfLibraryGlm, MAX_RUN_DURATION_SEC, OnlineTrialGlm, type GlmMethod, type RawTrialEstimate } from '../../src/preprocess/glm.ts';
import { canonicalHrf } from '../../src/preprocess/hrf.ts';
import { HAXBY_MASK, haxbyRun, ROOT } from '../helpers/data.ts';
import { pythonSkipReason, runPython } from '../helpers/python.ts';

const skip = pythonSkipReason(['numpy']);

interface Case { method: GlmMethod; windowSec: number; censored: number[] }

function runOnline(c: Case) {
  const { bold, events } = haxbyRun(1);
  const img = readNifti(bold);
  const mask = loadMask(HAXBY_MASK);
  const trials = readBidsEvents(events);
  const [nx, ny, nz] = img.header.shape;
  const n = nx * ny * nz;
  const T = img.header.volumes;
  const trSec = img.header.trSec;
  const glm = new OnlineTrialGlm(trials, mask.indices.length, {
    method: c.method, trSec, windowSec: c.windowSec, drift: { kind: 'poly', order: 2 },
    expectedDurationSec: T * trSec, motionRegressors: false,
  });
  const data = new Float32Array(T * mask.indices.length);
  const estimates: RawTrialEstimate[] = [];
  for (let t = 0; t < T; t++) {
    const masked = applyMask(mask, img.data.subarray(t * n, (t + 1) * n));
    data.set(masked, t * masked.length);
    estimates.push(...glm.addVolume(t, t * trSec, masked, undefined, c.censored.includes(t)));
  }
  estimates.push(...glm.finish(T - 1));
  return { estimates, data, trials, trSec, T, V: mask.indices.length };
}

function reference(c: Case, run: ReturnType<typeof runOnline>): Float64Array {
  const dir = mkdtempSync(join(tmpdir(), 'glm-ref-'));
  const spec = {
    trSec: run.trSec, windowSec: c.windowSec, driftOrder: 2, durationSec: run.T * run.trSec, volumes: run.T,
    voxels: run.V, method: c.method, censored: c.censored,
    trials: run.trials.map((t) => ({ onsetSec: t.onsetSec, durationSec: t.durationSec })),
  };
  writeFileSync(join(dir, 'spec.json'), JSON.stringify(spec));
  writeFileSync(join(dir, 'data.f32'), Buffer.from(run.data.buffer));
  runPython([join(ROOT, 'tools/glm_reference.py'), join(dir, 'spec.json'), join(dir, 'data.f32'), join(dir, 'out.f64')]);
  const buf = readFileSync(join(dir, 'out.f64'));
  return new Float64Array(buf.buffer, buf.byteOffset, buf.byteLength / 8);
}

const cases: Case[] = [
  { method: 'lss', windowSec: 10, censored: [] },
  { method: 'lss', windowSec: 10, censored: [20, 21, 57] },
  { method: 'lsa', windowSec: 10, censored: [] },
];

for (const c of cases) {
  test(`${c.method} estimates equal offline OLS (censored: ${c.censored.length})`, { skip }, () => {
    const run = runOnline(c);
    const ref = reference(c, run);
    // Order the online estimates as the reference writes them: by trial, then by volume.
    const ordered = [...run.estimates].sort((a, b) => a.trialId - b.trialId || a.volIdx - b.volIdx);
    assert.equal(ordered.length * run.V, ref.length, 'same number of estimates as the reference');
    for (const trial of run.trials) {
      const mine = ordered.filter((e) => e.trialId === trial.trialId);
      assert.equal(mine.filter((e) => e.final).length, 1, `trial ${trial.trialId} has one final estimate`);
      assert.ok(mine[mine.length - 1].final, `trial ${trial.trialId}: the last estimate is the final one`);
    }
    let offset = 0;
    for (const trial of run.trials) {
      const mine = ordered.filter((e) => e.trialId === trial.trialId);
      const finalRef = ref.subarray((offset + mine.length - 1) * run.V, (offset + mine.length) * run.V);
      const scale = Math.max(...Array.from(finalRef, Math.abs));
      for (const e of mine) {
        const r = ref.subarray(offset * run.V, (offset + 1) * run.V);
        let maxDiff = 0;
        for (let v = 0; v < run.V; v++) maxDiff = Math.max(maxDiff, Math.abs(e.betas[v] - r[v]));
        assert.ok(maxDiff <= 1e-4 * scale, `trial ${trial.trialId} at volume ${e.volIdx}: max diff ${maxDiff} > 1e-4 x ${scale}`);
        offset++;
      }
    }
  });
}

test('canonical HRF peaks near 5 s and has an undershoot', () => {
  const dt = 0.1;
  const h = canonicalHrf(dt);
  let peak = 0;
  for (let i = 1; i < h.length; i++) if (h[i] > h[peak]) peak = i;
  assert.ok(peak * dt > 4.5, `peak at ${peak * dt} s`);
  assert.ok(peak * dt < 5.5, `peak at ${peak * dt} s`);
  const min = Math.min(...Array.from(h));
  assert.ok(min < 0, 'undershoot below zero');
  assert.ok(Math.abs(h.reduce((a, b) => a + b, 0) - 1) < 1e-12, 'unit sum');
});

test('trials added during the run match a design known in advance', () => {
  const { bold, events } = haxbyRun(2);
  const img = readNifti(bold);
  const mask = loadMask(HAXBY_MASK);
  const trials = readBidsEvents(events);
  const n = img.header.shape[0] * img.header.shape[1] * img.header.shape[2];
  const T = img.header.volumes;
  const trSec = img.header.trSec;
  const opts = { method: 'lss' as const, trSec, windowSec: 10, drift: { kind: 'poly' as const, order: 2 }, expectedDurationSec: T * trSec, motionRegressors: false };
  const known = new OnlineTrialGlm(trials, mask.indices.length, opts);
  const live = new OnlineTrialGlm([], mask.indices.length, opts);
  const fromKnown: RawTrialEstimate[] = [];
  const fromLive: RawTrialEstimate[] = [];
  for (let t = 0; t < T; t++) {
    // Each trial is announced a few volumes after its onset, as a late stimulus-onset message would be.
    for (const trial of trials) if (Math.floor(trial.onsetSec / trSec) + 3 === t) live.addTrial(trial);
    const masked = applyMask(mask, img.data.subarray(t * n, (t + 1) * n));
    fromKnown.push(...known.addVolume(t, t * trSec, masked));
    fromLive.push(...live.addVolume(t, t * trSec, masked));
  }
  const finalKnown = fromKnown.filter((e) => e.final);
  const finalLive = fromLive.filter((e) => e.final);
  assert.equal(finalLive.length, trials.length);
  for (const k of finalKnown) {
    const l = finalLive.find((e) => e.trialId === k.trialId)!;
    assert.equal(l.volIdx, k.volIdx, `trial ${k.trialId} final at the same volume`);
    const scale = Math.max(...Array.from(k.betas, Math.abs));
    let maxDiff = 0;
    for (let v = 0; v < k.betas.length; v++) maxDiff = Math.max(maxDiff, Math.abs(k.betas[v] - l.betas[v]));
    assert.ok(maxDiff <= 1e-9 * scale, `trial ${k.trialId}: max diff ${maxDiff}`);
  }
});

test('hrf library groups match one GLM per HRF', () => {
  const { bold, events } = haxbyRun(3);
  const img = readNifti(bold);
  const mask = loadMask(HAXBY_MASK);
  const trials = readBidsEvents(events);
  const V = mask.indices.length;
  const n = img.header.shape[0] * img.header.shape[1] * img.header.shape[2];
  const trSec = img.header.trSec;
  const dt = 0.1;
  const canonical = canonicalHrf(dt);
  const late = new Float64Array(canonical.length);
  for (let i = 0; i < canonical.length; i++) late[i] = canonical[Math.max(0, i - 15)]; // 1.5 s later
  const samples = canonical.length;
  const library = new Float32Array(2 * samples);
  library.set(canonical, 0);
  library.set(late, samples);
  const index = new Uint8Array(V).map((_, v) => v % 2);
  const opts = { method: 'lss' as const, trSec, windowSec: 10, drift: { kind: 'poly' as const, order: 2 }, expectedDurationSec: img.header.volumes * trSec, motionRegressors: false };
  const lib = new HrfLibraryGlm(trials, index, library, samples, dt, opts);
  const odd = new OnlineTrialGlm(trials, V / 2, { ...opts, hrf: library.subarray(samples), hrfDtSec: dt });
  const finalsLib: RawTrialEstimate[] = [];
  const finalsOdd: RawTrialEstimate[] = [];
  for (let t = 0; t < img.header.volumes; t++) {
    const masked = applyMask(mask, img.data.subarray(t * n, (t + 1) * n));
    const oddValues = masked.filter((_, v) => v % 2 === 1);
    finalsLib.push(...lib.addVolume(t, t * trSec, masked).filter((e) => e.final));
    finalsOdd.push(...odd.addVolume(t, t * trSec, oddValues).filter((e) => e.final));
  }
  assert.equal(finalsLib.length, trials.length);
  for (const e of finalsLib) {
    const ref = finalsOdd.find((o) => o.trialId === e.trialId)!;
    for (let k = 0; k < ref.betas.length; k++) assert.ok(Math.abs(e.betas[2 * k + 1] - ref.betas[k]) < 1e-9, `trial ${e.trialId} voxel ${2 * k + 1}`);
  }
  // The two HRFs give different betas, so the grouping matters.
  const first = finalsLib[0].betas;
  const canonicalOnly = new OnlineTrialGlm(trials, V, { ...opts, hrf: library.subarray(0, samples), hrfDtSec: dt });
  let canonicalFinal: RawTrialEstimate | undefined;
  for (let t = 0; t < img.header.volumes && !canonicalFinal; t++) {
    canonicalFinal = canonicalOnly.addVolume(t, t * trSec, applyMask(mask, img.data.subarray(t * n, (t + 1) * n))).find((e) => e.final && e.trialId === finalsLib[0].trialId);
  }
  assert.ok(Math.abs(first[1] - canonicalFinal!.betas[1]) > 1e-6, 'odd voxels use the later HRF');
  assert.ok(Math.abs(first[0] - canonicalFinal!.betas[0]) < 1e-9, 'even voxels use the canonical HRF');
});

test('drift basis clamps a huge claimed run length', () => {
  // A NIfTI-2 header may claim 2^40 volumes. The DCT basis grows with the run, so without the
  // clamp the regressor arrays would not fit in memory.
  const trials = [{ trialId: 0, stimulusId: 'a', onsetSec: 4, durationSec: 2 }];
  const glm = new OnlineTrialGlm(trials, 50, {
    method: 'lss', trSec: 2, windowSec: 10, drift: { kind: 'dct', cutoffSec: 128 }, expectedDurationSec: 2 ** 40 * 2, motionRegressors: false,
  });
  const drift = glm.driftRow(3600);
  assert.equal(drift.length, 1 + Math.floor((2 * MAX_RUN_DURATION_SEC) / 128));
  const estimates: RawTrialEstimate[] = [];
  for (let v = 0; v < 12; v++) estimates.push(...glm.addVolume(v, v * 2, Float32Array.from({ length: 50 }, (_, i) => 100 + Math.sin(v + i))));
  estimates.push(...glm.finish(11));
  const finals = estimates.filter((e) => e.final);
  assert.equal(finals.length, 1);
  assert.equal(finals[0].betas.length, 50);
});
