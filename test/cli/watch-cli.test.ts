// watch end to end: a folder of per-volume NIfTI files from a real EPI series, motion correction
// on (scanner input under --motion auto), a trial design, a recording and a report.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeNifti, readNifti } from '../../src/io/nifti.ts';
import { ROOT } from '../helpers/data.ts';

const SERIES = join(ROOT, 'data/epi/pyneal/testSeries.nii.gz');
const MASK = join(ROOT, 'data/epi/pyneal/testSeries_mask.nii.gz');

test('watch decodes a folder of volumes with motion correction', () => {
  const dir = mkdtempSync(join(tmpdir(), 'watch-cli-'));
  const exportDir = join(dir, 'export');
  mkdirSync(exportDir);
  const img = readNifti(SERIES);
  // testSeries.nii.gz has no qform or sform, so its affine is the identity. Its mask carries the
  // scanner affine, and the export files get that affine here as a scanner would write it.
  const mask = readNifti(MASK);
  const [nx, ny, nz] = img.header.shape;
  const n = nx * ny * nz;
  for (let t = 0; t < img.header.volumes; t++) {
    writeFileSync(join(exportDir, `vol_${String(t).padStart(4, '0')}.nii`), encodeNifti(img.data.subarray(t * n, (t + 1) * n), {
      shape: img.header.shape, voxelSizeMm: mask.header.voxelSizeMm, trSec: 1, affine: mask.header.affine, datatype: 'float32',
    }));
  }
  const events = join(dir, 'events.tsv');
  writeFileSync(events, 'onset\tduration\ttrial_type\n0\t1\tcue\n');
  const report = join(dir, 'report.json');
  const record = join(dir, 'record');
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'watch', '--dir', exportDir, '--format', 'nifti', '--include-existing',
    '--expected-volumes', String(img.header.volumes), '--tr', '1', '--mask', MASK, '--events', events, '--window-sec', '1',
    '--no-dashboard', '--report', report, '--record-to', record], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.equal(rep.summary.volumesReceived, 3);
  assert.equal(rep.summary.volumesProcessed, 3);
  assert.equal(rep.run.motion, true, 'motion correction is on for scanner input');
  assert.equal(rep.run.trialCount, 1);
  assert.equal(readdirSync(join(record, 'volumes')).length, 3, 'every volume recorded');
  const trials = readFileSync(join(record, 'trials.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(trials.length, 1);
  assert.equal(trials[0].stimulusId, 'cue');
  assert.equal(readFileSync(join(record, 'betas_final.f32')).byteLength, 138 * 4, 'one float32 beta per mask voxel');
  const masked = readFileSync(join(record, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'masked-volume');
  assert.equal(masked.length, 3);
  for (const m of masked) {
    assert.equal(m.motion.translationMm.length, 3);
    assert.ok(Math.abs(m.motion.translationMm[0]) < 5, `plausible motion at volume ${m.volIdx}`);
  }

  // The recording replays as a run of its own.
  const again = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'replay', '--record', record, '--mask', MASK, '--window-sec', '1',
    '--motion', 'off', '--speed', 'max', '--no-dashboard', '--report', join(dir, 'replayed.json')], { encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  assert.equal(again.status, 0, again.stderr);
  const replayed = JSON.parse(readFileSync(join(dir, 'replayed.json'), 'utf8'));
  assert.equal(replayed.summary.volumesProcessed, 3);
  assert.equal(replayed.run.trialCount, 1);
});
