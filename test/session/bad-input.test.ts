import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { bidsSource } from '../../src/ingest/bids.ts';
import { runSession } from '../../src/session/run.ts';
import { DEFAULT_PROCESSING } from '../../src/session/options.ts';
import { encodeNifti, readNifti } from '../../src/io/nifti.ts';
import { readBidsEvents } from '../../src/io/tsv.ts';
import { writeLinearModel } from '../../src/fit/onnx-linear.ts';
import type { PipelineWarning } from '../../src/events.ts';
import { HAXBY_MASK, haxbyRun, ROOT } from '../helpers/data.ts';

const dir = mkdtempSync(join(tmpdir(), 'bad-input-'));
const processing = { ...DEFAULT_PROCESSING, maskFile: HAXBY_MASK };

test('truncated nii.gz keeps complete volumes and names the file', async () => {
  const truncated = join(dir, 'truncated_bold.nii.gz');
  const bytes = readFileSync(haxbyRun(1).bold);
  writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
  const warnings: PipelineWarning[] = [];
  const result = await runSession({
    source: bidsSource({ bold: truncated, events: haxbyRun(1).events }), processing, device: 'cpu', speed: { kind: 'max' },
    onEvent: (e) => { if (e.type === 'warning' && e.kind === 'corrupt') warnings.push(e); },
  });
  const s = result.report.summary as Record<string, number>;
  assert.ok(s.volumesReceived > 10 && s.volumesReceived < 121, `received ${s.volumesReceived} of 121 volumes`);
  assert.equal(s.volumesProcessed, s.volumesReceived);
  assert.equal(s.volumesDropped, 1, 'the broken volume counts as dropped');
  assert.equal(warnings.length, 1);
  assert.match(warnings[0].message, /truncated_bold\.nii\.gz/);
  assert.match(warnings[0].message, /field: gzip stream/);
  assert.match(warnings[0].message, /complete volumes read/);
  assert.match(warnings[0].message, /fix: .*copy it again/);
});

test('events.tsv without trial_type is rejected', () => {
  const events = join(dir, 'no_label_events.tsv');
  writeFileSync(events, 'onset\tduration\n0\t2\n');
  assert.throws(() => readBidsEvents(events), (err: Error) => {
    assert.match(err.message, /required column is missing/);
    assert.match(err.message, /no_label_events\.tsv/);
    assert.match(err.message, /field: trial_type/);
    assert.match(err.message, /value: "onset, duration"/);
    assert.match(err.message, /--label-column/);
    return true;
  });
});

test('events.tsv with BOM, CRLF and n/a is read', () => {
  const events = join(dir, 'bom_events.tsv');
  writeFileSync(events, '\ufeffonset\tduration\ttrial_type\r\n10\t2\tface\r\n4\tn/a\thouse\r\n20\t2\tn/a\r\n');
  const trials = readBidsEvents(events);
  assert.deepEqual(trials.map((t) => [t.onsetSec, t.durationSec, t.stimulusId]), [[4, 0, 'house'], [10, 2, 'face']]);
});

test('mask on another grid shape is rejected', async () => {
  const mask = join(dir, 'mask_41x20x1.nii.gz');
  const ref = readNifti(HAXBY_MASK);
  writeFileSync(mask, encodeNifti(new Float32Array(41 * 20).fill(1), { shape: [41, 20, 1], voxelSizeMm: [3.1, 3.75, 3.75], affine: ref.header.affine, datatype: 'int16', gzip: true }));
  await assert.rejects(runSession({ source: bidsSource(haxbyRun(1)), processing: { ...processing, maskFile: mask }, device: 'cpu', speed: { kind: 'max' } }), (err: Error) => {
    assert.match(err.message, /different grids \(shape\)/);
    assert.match(err.message, /mask_41x20x1\.nii\.gz/);
    assert.match(err.message, /value: "41x20x1"/);
    assert.match(err.message, /40x20x1/);
    return true;
  });
});

test('mask with another affine is rejected', async () => {
  const mask = join(dir, 'mask_shifted.nii.gz');
  const ref = readNifti(HAXBY_MASK);
  const affine = Float64Array.from(ref.header.affine);
  affine[3] += 2;
  writeFileSync(mask, encodeNifti(ref.data, { shape: [40, 20, 1], voxelSizeMm: [3.1, 3.75, 3.75], affine, datatype: 'int16', gzip: true }));
  await assert.rejects(runSession({ source: bidsSource(haxbyRun(1)), processing: { ...processing, maskFile: mask }, device: 'cpu', speed: { kind: 'max' } }), (err: Error) => {
    assert.match(err.message, /different grids \(affine\)/);
    assert.match(err.message, /mask_shifted\.nii\.gz/);
    assert.match(err.message, /max difference 2\.0000 mm/);
    return true;
  });
});

test('model voxel count must match the mask', async () => {
  const modelDir = join(dir, 'model-529');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(modelDir);
  writeLinearModel(join(modelDir, 'classifier.onnx'), { inputName: 'voxels', outputName: 'scores', inDim: 529, outDim: 2, weights: new Float32Array(529 * 2), bias: new Float32Array(2) });
  writeFileSync(join(modelDir, 'manifest.json'), JSON.stringify({
    format: 'mindeye-rt-model', version: 1, name: 'wrong-width', voxels: { count: 529 },
    heads: { classifier: { file: 'classifier.onnx', input: 'voxels', labels: ['a', 'b'] } },
  }));
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'replay', '--bids', haxbyRun(1).bold, '--events', haxbyRun(1).events,
    '--mask', HAXBY_MASK, '--model', modelDir, '--speed', 'max', '--no-dashboard'], { encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /MODEL_VOXELS_MISMATCH/);
  assert.match(r.stderr, /manifest\.json/);
  assert.match(r.stderr, /field: voxels\.count/);
  assert.match(r.stderr, /value: 529/);
  assert.match(r.stderr, /530 \(voxels with value > 0/);
});

test('replay without a source prints usage help', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'replay', '--no-dashboard'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Choose exactly one source/);
  assert.match(r.stderr, /--demo, --nsd-root, --bids, --record/);
});

test('nifti header with an unknown magic is rejected', () => {
  const notNifti = join(dir, 'not_nifti.nii');
  copyFileSync(haxbyRun(1).events, notNifti);
  assert.throws(() => readNifti(notNifti), /Not a NIfTI-1 or NIfTI-2 file[\s\S]*not_nifti\.nii[\s\S]*field: magic/);
});
