import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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
import { pythonSkipReason, runPython } from '../helpers/python.ts';
import { isMindeyeError } from '../../src/errors.ts';
import { streamNiftiVolumes } from '../../src/io/nifti.ts';
import { decodeScannerFile } from '../../src/ingest/dicom/index.ts';
import { loadManifest } from '../../src/decode/manifest.ts';
import { CASES, CORPUS, type CorpusCase } from './bad-input-corpus.ts';

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

// ---- The bad-input corpus (test/fixtures/bad-input/README.md) ----

const nibabelSkip = pythonSkipReason(['nibabel', 'numpy']);

/** Voxels of every readable NIfTI case as nibabel reads them (get_fdata: scaling applied), NaN as null. */
function nibabelValues(files: string[]): Record<string, (number | null)[]> {
  const script = [
    'import json, sys, numpy as np, nibabel as nib',
    'out = {}',
    'for f in sys.argv[1:]:',
    '    d = np.asarray(nib.load(f).get_fdata(), np.float64).ravel(order="F")',
    '    out[f] = [None if np.isnan(x) else float(x) for x in d]',
    'print(json.dumps(out))',
  ].join('\n');
  return JSON.parse(runPython(['-c', script, ...files])) as Record<string, (number | null)[]>;
}

/** Runs the reader of a case on its file; returns a one-line description of what was read. */
async function readCase(c: CorpusCase): Promise<string> {
  const path = join(CORPUS, c.file);
  switch (c.reader) {
    case 'nifti': {
      const image = readNifti(path);
      let streamed = 0;
      for await (const volume of streamNiftiVolumes(path)) {
        assert.deepEqual(volume.data, image.data.subarray(volume.index * volume.data.length, (volume.index + 1) * volume.data.length), `${c.file}: streamed volume ${volume.index} equals readNifti`);
        streamed++;
      }
      assert.equal(streamed, image.header.volumes, `${c.file}: every volume streamed`);
      return `read ${image.header.shape.join('x')}x${image.header.volumes}`;
    }
    case 'dicom': {
      const volumes = decodeScannerFile(readFileSync(path), path, { format: 'auto' });
      return `read ${volumes.length} volume(s)`;
    }
    case 'events': {
      const trials = readBidsEvents(path);
      assert.deepEqual(trials.map((t) => [t.onsetSec, t.durationSec, t.stimulusId]), [[4, 0, 'house'], [10, 2, 'face']], 'BOM and CR stripped, n/a rows handled');
      return `read ${trials.length} trials`;
    }
    case 'model':
      loadManifest(path);
      return 'loaded';
  }
}

for (const c of CASES) {
  test(`corpus: ${c.name}`, async (t) => {
    if (c.rejected === undefined) {
      const outcome = await readCase(c);
      t.diagnostic(`${c.file}: ${outcome}`);
      return;
    }
    const rejected = c.rejected;
    await assert.rejects(readCase(c), (err: unknown) => {
      assert.ok(isMindeyeError(err), `${c.file}: a MindeyeError, got ${String(err)}`);
      assert.equal(err.code, rejected.code);
      assert.equal(err.details.field, rejected.field);
      assert.ok((err.details.fix ?? '').length > 0, 'the error says what to do');
      assert.match(err.message, new RegExp(c.file.replace(/[.]/g, '\\.')), 'the error names the file');
      for (const pattern of rejected.patterns) assert.match(err.message, pattern);
      t.diagnostic(`${c.file}: ${err.code} field=${err.details.field} value=${String(err.details.value)}`);
      return true;
    });
    if (c.reader === 'nifti') {
      // The streaming reader, which replays use, rejects the file with the same code, except the
      // gzip bomb: it stops after the one volume the header states and never inflates the rest.
      let streamed = 0;
      const stream = async () => {
        for await (const volume of streamNiftiVolumes(join(CORPUS, c.file))) streamed += volume.data.length > 0 ? 1 : 0;
      };
      if (c.file === 'gzip-bomb.nii.gz') {
        await stream();
        assert.equal(streamed, 1);
      } else {
        await assert.rejects(stream(), (err: unknown) => isMindeyeError(err) && err.code === rejected.code);
      }
    }
  });
}

test('corpus NIfTI values match nibabel', { skip: nibabelSkip }, () => {
  const readable = CASES.filter((c) => c.reader === 'nifti' && c.rejected === undefined).map((c) => join(CORPUS, c.file));
  const reference = nibabelValues(readable);
  for (const file of readable) {
    const ours = readNifti(file).data;
    const theirs = reference[file];
    assert.equal(ours.length, theirs.length, `${file}: voxel count`);
    for (let i = 0; i < ours.length; i++) {
      const expected = theirs[i];
      if (expected === null) assert.ok(Number.isNaN(ours[i]), `${file}: voxel ${i} is NaN in nibabel`);
      else assert.ok(Math.abs(ours[i] - expected) <= 1e-6 * Math.max(1, Math.abs(expected)), `${file}: voxel ${i} is ${ours[i]}, nibabel ${expected}`);
    }
  }
});

test('corpus scaling follows the NIfTI rules', () => {
  const good = readNifti(join(CORPUS, 'good-volume.nii')).data;
  const slopeZero = readNifti(join(CORPUS, 'scl-slope-zero.nii'));
  assert.equal(slopeZero.header.sclSlope, 1, 'scl_slope 0 reads as no scaling');
  assert.equal(slopeZero.header.sclInter, 0, 'scl_inter is ignored with scl_slope 0');
  assert.deepEqual(slopeZero.data, good);
  const scaled = readNifti(join(CORPUS, 'scl-slope-inter.nii')).data;
  assert.ok(good.some((x) => x !== 0), 'the reference volume has signal');
  for (let i = 0; i < good.length; i++) assert.equal(scaled[i], good[i] * 0.5 + 100, `voxel ${i}`);
});

test('size cap is configurable through the environment', () => {
  const previous = process.env.MINDEYE_MAX_VOLUME_BYTES;
  process.env.MINDEYE_MAX_VOLUME_BYTES = '1000';
  try {
    // 40 x 20 x 1 voxels are 3200 bytes as float32, over a 1000-byte cap.
    assert.throws(() => readNifti(join(CORPUS, 'good-volume.nii')), /40 x 20 x 1 = 800 voxels \(3\.1 KiB as float32\)[\s\S]*at most 1000 bytes/);
    process.env.MINDEYE_MAX_VOLUME_BYTES = 'lots';
    assert.throws(() => readNifti(join(CORPUS, 'good-volume.nii')), /Invalid volume size limit[\s\S]*MINDEYE_MAX_VOLUME_BYTES[\s\S]*"lots"/);
  } finally {
    if (previous === undefined) delete process.env.MINDEYE_MAX_VOLUME_BYTES;
    else process.env.MINDEYE_MAX_VOLUME_BYTES = previous;
  }
});

test('watch skips the broken corpus files and keeps order', () => {
  // A scanner export folder of per-volume files: Haxby run 1 volumes, with corpus files in
  // place of some. Each broken file is reported and skipped, the readable ones are processed,
  // and the run goes on in index order.
  const root = mkdtempSync(join(tmpdir(), 'bad-input-watch-'));
  const exportDir = join(root, 'export');
  mkdirSync(exportDir);
  const run = readNifti(haxbyRun(1).bold);
  const voxels = 40 * 20;
  const replaced: Record<number, string> = {
    1: 'wrong-magic.nii', 3: 'huge-claim.nii', 4: 'big-endian.nii', 5: 'nifti2.nii', 6: 'five-d.nii', 7: 'zero-dim.nii',
    8: 'nan-voxels.nii', 9: 'scl-slope-inter.nii', 10: 'truncated.nii.gz', 12: 'gzip-bomb.nii.gz',
  };
  const volumeCount = 14;
  for (let t = 0; t < volumeCount; t++) {
    const name = join(exportDir, `vol_${String(t).padStart(4, '0')}.nii`);
    const corpusFile = replaced[t];
    if (corpusFile !== undefined) {
      copyFileSync(join(CORPUS, corpusFile), corpusFile.endsWith('.gz') ? `${name}.gz` : name);
      continue;
    }
    writeFileSync(name, encodeNifti(run.data.subarray(t * voxels, (t + 1) * voxels), {
      shape: [40, 20, 1], voxelSizeMm: run.header.voxelSizeMm, trSec: 2.5, affine: run.header.affine, datatype: 'int16',
    }));
  }
  const events = join(root, 'events.tsv');
  writeFileSync(events, 'onset\tduration\ttrial_type\n5\t5\tface\n');
  const report = join(root, 'report.json');
  const record = join(root, 'record');
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'watch', '--dir', exportDir, '--format', 'nifti', '--include-existing',
    '--expected-volumes', String(volumeCount), '--tr', '2.5', '--mask', HAXBY_MASK, '--events', events, '--motion', 'off',
    '--gap-timeout-ms', '300', '--corrupt-timeout-ms', '300', '--no-dashboard', '--report', report, '--record-to', record],
  { encoding: 'utf8', timeout: 60_000, env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  assert.equal(r.status, 0, r.stderr);

  const summary = JSON.parse(readFileSync(report, 'utf8')).summary;
  const processed = [0, 2, 4, 5, 8, 9, 11, 13];
  assert.equal(summary.volumesProcessed, processed.length);
  assert.equal(summary.volumesDropped, volumeCount - processed.length);
  const recorded = readFileSync(join(record, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const masked = recorded.filter((e) => e.type === 'masked-volume');
  assert.deepEqual(masked.map((e) => e.volIdx), processed, 'readable volumes processed in index order');
  const nanVolume = masked.find((e) => e.volIdx === 8) as { flags: string[] };
  assert.ok(nanVolume.flags.includes('nan'), 'the NaN volume is flagged');
  const gaps = recorded.filter((e) => e.type === 'gap').map((e) => e.volIdx);
  assert.deepEqual(gaps, [1, 3, 6, 7, 10, 12], 'every skipped file leaves a gap at its index');

  const warnings = recorded.filter((e) => e.type === 'warning') as { kind: string; volIdx?: number; message: string }[];
  const expectWarning = (file: string, kind: string, pattern: RegExp) => {
    const warning = warnings.find((w) => w.message.includes(file) && w.kind === kind);
    assert.ok(warning !== undefined, `a ${kind} warning names ${file}: ${JSON.stringify(warnings.map((w) => w.message))}`);
    assert.match(warning.message, pattern);
    process.stdout.write(`# watch ${file}: ${kind}: ${warning.message.split('\n')[0].slice(0, 160)}\n`);
  };
  expectWarning('vol_0001.nii', 'invalid', /field: magic/);
  expectWarning('vol_0003.nii', 'invalid', /larger than the size limit/);
  expectWarning('vol_0006.nii', 'invalid', /more than 4 dimensions/);
  expectWarning('vol_0007.nii', 'invalid', /dim\[1\]/);
  expectWarning('vol_0010.nii.gz', 'corrupt', /incomplete after 300 ms/);
  expectWarning('vol_0012.nii.gz', 'invalid', /more data than its header states/);
  const nanWarning = warnings.find((w) => w.volIdx === 8);
  assert.ok(nanWarning !== undefined, 'the NaN volume gets a warning');
  assert.match(nanWarning.message, /non-finite voxels set to 0/);
});

test('convert skips the broken corpus DICOM files', () => {
  // A folder with the real mosaic and both broken mosaics made from it: convert reports each
  // broken file on stderr and writes the one readable volume.
  const root = mkdtempSync(join(tmpdir(), 'bad-input-convert-'));
  const input = join(root, 'dicom');
  mkdirSync(input);
  copyFileSync(join(ROOT, 'data/dicom/siemens-mosaic/ep2d_Asc_2/IM-0001-0001.dcm'), join(input, 'IM-0001-0001.dcm'));
  copyFileSync(join(CORPUS, 'dicom-no-csa.dcm'), join(input, 'IM-0001-0002.dcm'));
  copyFileSync(join(CORPUS, 'dicom-huge-claim.dcm'), join(input, 'IM-0001-0003.dcm'));
  const out = join(root, 'run.nii.gz');
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'convert', input, '--out', out], { encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /IM-0001-0002\.dcm skipped: The mosaic slice count is missing/);
  assert.match(r.stderr, /IM-0001-0003\.dcm skipped: The header claims a volume larger than the size limit/);
  const converted = readNifti(out);
  assert.deepEqual(converted.header.shape, [64, 64, 36]);
  assert.equal(converted.header.volumes, 1);
  process.stdout.write(`# convert: ${r.stderr.trim().split('\n').filter((l) => l.includes('skipped')).length} files skipped, 1 volume written\n`);
});
