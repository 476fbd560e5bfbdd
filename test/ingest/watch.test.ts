import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Gap, RunInfo, Volume } from '../../src/events.ts';
import { encodeNifti } from '../../src/io/nifti.ts';
import { watchSource, type WatchOptions } from '../../src/ingest/watch.ts';
import {
  affineError, assertVolumeEquals, dicomFiles, EventLog, fixture, hasPythonModule, REFERENCE_SERIES, referenceOf,
  scratchDir, sleep,
} from './helpers.ts';

const XA = 'siemens-xa-enhanced/6_REST1_w_SMS_PF7-8';
const xa = (n: number): string => fixture(XA, `6_${n}.dcm`);
const logs: EventLog[] = [];

function watchLog(opts: WatchOptions): EventLog {
  const log = new EventLog(watchSource(opts));
  logs.push(log);
  return log;
}

after(() => {
  for (const log of logs) log.close();
});

/** Deterministic shuffle so that slice files arrive out of name order. */
function shuffled<T>(items: T[]): T[] {
  const out = [...items];
  let seed = 7;
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe('watch against dcm2niix references', () => {
  for (const series of REFERENCE_SERIES) {
    it(`matches the reference: ${series.name}`, async () => {
      const dir = scratchDir('watch');
      const source = watchSource({ dir, expectedVolumes: series.volumes, gapTimeoutMs: 20000 });
      const log = new EventLog(source);
      logs.push(log);
      await sleep(50);
      for (const file of shuffled(dicomFiles(series.dir))) copyFileSync(file, join(dir, file.split('/').pop()!));
      await log.waitForEnd();
      const ref = referenceOf(series);
      const info = log.events[0] as RunInfo;
      assert.equal(info.type, 'run-info');
      assert.deepEqual(info.shape, ref.header.shape);
      assert.ok(affineError(info.affine, ref.header.affine) < 1e-3);
      assert.ok(Math.abs(info.trSec - ref.header.trSec) < 1e-6, `TR ${info.trSec} vs ${ref.header.trSec}`);
      assert.equal(info.motionCorrection, false);
      const volumes = log.events.filter((e): e is Volume => e.type === 'volume');
      assert.deepEqual(volumes.map((v) => v.volIdx), [...Array(series.volumes).keys()]);
      for (const v of volumes) {
        assertVolumeEquals(v.data, ref, v.volIdx, `volume ${v.volIdx}`);
        assert.ok(affineError(v.affine, ref.header.affine) < 1e-3);
        // A volume is received when its last file (the last slice file for GE) was complete.
        const files = [...source.fileTimes.values()].filter((t) => t.volIdx === v.volIdx);
        assert.ok(files.length > 0, `file timing of volume ${v.volIdx}`);
        for (const t of files) assert.ok(t.appearedAtMs <= t.completeAtMs && t.completeAtMs <= t.decodedAtMs!);
        assert.equal(v.receivedAtMs, Math.max(...files.map((t) => t.completeAtMs)));
      }
      assert.equal(log.events.length, 1 + series.volumes, `unexpected events: ${log.labels().join(', ')}`);
    });
  }
});

describe('watch of a live export', () => {
  it('reports partial, truncated, reordered and repeated files exactly', async () => {
    const dir = scratchDir('live');
    const log = watchLog({ dir, expectedVolumes: 6, corruptTimeoutMs: 600, gapTimeoutMs: 20000, stableMs: 30 });
    await sleep(50);

    copyFileSync(xa(1), join(dir, '6_1.dcm'));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 0, 'volume 0');

    // Volume 1 written in two halves with a pause longer than the quiet time.
    const second = readFileSync(xa(2));
    writeFileSync(join(dir, '6_2.dcm'), second.subarray(0, 70000));
    await sleep(300);
    writeFileSync(join(dir, '6_2.dcm'), second);
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 1, 'volume 1');

    // Volume 3 before volume 2.
    copyFileSync(xa(4), join(dir, '6_4.dcm'));
    await sleep(150);
    assert.ok(!log.events.some((e) => e.type === 'volume' && e.volIdx === 3), 'volume 3 waits for volume 2');
    copyFileSync(xa(3), join(dir, '6_3.dcm'));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 3, 'volume 3');

    // Volume 2 again under another name.
    copyFileSync(xa(3), join(dir, '6_3_again.dcm'));
    await log.waitFor((e) => e.type === 'warning' && e.kind === 'duplicate', 'duplicate warning');

    // Volume 4 truncated and never completed.
    writeFileSync(join(dir, '6_5.dcm'), readFileSync(xa(5)).subarray(0, 90000));
    await log.waitFor((e) => e.type === 'gap' && e.volIdx === 4, 'gap 4');

    copyFileSync(xa(6), join(dir, '6_6.dcm'));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 5, 'volume 5');
    await sleep(20);

    assert.deepEqual(log.labels(), [
      'run-info', 'volume 0', 'volume 1', 'volume 2', 'volume 3', 'warning duplicate 2', 'warning corrupt 4', 'gap 4', 'volume 5',
    ]);
    assert.equal(log.completed, true);
    const corrupt = log.events.find((e) => e.type === 'warning' && e.kind === 'corrupt');
    assert.match(corrupt!.type === 'warning' ? corrupt!.message : '', /6_5\.dcm skipped: The file ends early and is still incomplete after 600 ms without change\. file: .*6_5\.dcm; field: file size; value: "90000 bytes; .*fix: export the file again/);
    const gap = log.events.find((e) => e.type === 'gap');
    assert.equal(gap!.type === 'gap' ? gap!.reason : '', `volume 4 was corrupt: ${join(dir, '6_5.dcm')}`);
    const volumes = log.events.filter((e): e is Volume => e.type === 'volume');
    const ref = referenceOf(REFERENCE_SERIES.find((s) => s.dir === XA)!);
    for (const v of volumes) assertVolumeEquals(v.data, ref, v.volIdx, `volume ${v.volIdx}`);
  });

  it('turns a missing volume into a gap after the timeout', async () => {
    const dir = scratchDir('gap');
    const log = watchLog({ dir, gapTimeoutMs: 400 });
    await sleep(50);
    copyFileSync(xa(1), join(dir, '6_1.dcm'));
    copyFileSync(xa(3), join(dir, '6_3.dcm'));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 2, 'volume 2');
    copyFileSync(xa(2), join(dir, '6_2.dcm'));
    await log.waitFor((e) => e.type === 'warning' && e.kind === 'late', 'late warning');
    assert.deepEqual(log.labels(), ['run-info', 'volume 0', 'gap 1', 'volume 2', 'warning late 1']);
    const gap = log.events[2];
    assert.equal(gap.type === 'gap' ? gap.reason : '', 'volume 1 did not arrive within 400 ms after a later volume');
  });

  it('reports a non-DICOM file and another series once', async () => {
    const dir = scratchDir('stray');
    const log = watchLog({ dir, gapTimeoutMs: 20000 });
    await sleep(50);
    copyFileSync(xa(1), join(dir, '6_1.dcm'));
    await log.waitFor((e) => e.type === 'volume', 'volume 0');
    writeFileSync(join(dir, 'notes.txt'), 'scanner operator notes\n'.repeat(40));
    await log.waitFor((e) => e.type === 'warning' && e.kind === 'invalid', 'invalid warning');
    copyFileSync(fixture('rtcloud-sample/001_000013_000001.dcm'), join(dir, '001_000013_000001.dcm'));
    copyFileSync(fixture('rtcloud-sample/001_000013_000002.dcm'), join(dir, '001_000013_000002.dcm'));
    await log.waitFor((e) => e.type === 'warning' && e.kind === 'other', 'series warning');
    copyFileSync(xa(2), join(dir, '6_2.dcm'));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 1, 'volume 1');
    assert.deepEqual(log.labels(), ['run-info', 'volume 0', 'warning invalid', 'warning other', 'volume 1']);
    const messages = log.events.flatMap((e) => (e.type === 'warning' ? [e.message] : []));
    assert.match(messages[0], /notes\.txt skipped: The file is neither DICOM, NIfTI nor a Philips PAR header/);
    assert.match(messages[1], /^series 13 ignored \(first file .*001_000013_00000[12]\.dcm\): series 6 is being followed$/);
  });

  it('reports a mosaic whose count does not fit', async () => {
    const dir = scratchDir('badmosaic');
    const log = watchLog({ dir, gapTimeoutMs: 20000 });
    await sleep(50);
    const bytes = Buffer.from(readFileSync(fixture('siemens-mosaic/ep2d_Asc_2/IM-0001-0001.dcm')));
    // The CSA value sits 84 bytes (tag header) + 16 bytes (item header) after the tag name.
    const value = bytes.indexOf('NumberOfImagesInMosaic') + 84 + 16;
    assert.equal(bytes.toString('latin1', value, value + 2), '36');
    bytes.write('25', value, 'latin1');
    writeFileSync(join(dir, 'IM-0001-0001.dcm'), bytes);
    await log.waitFor((e) => e.type === 'warning', 'invalid warning');
    await sleep(100);
    assert.deepEqual(log.labels(), ['warning invalid']);
    const warning = log.events[0];
    assert.match(warning.type === 'warning' ? warning.message : '', /IM-0001-0001\.dcm skipped: The mosaic image count does not fit its matrix\. file: .*value: 25/);
  });

  it('follows a new series, not one already in the folder', async () => {
    const dir = scratchDir('series');
    copyFileSync(fixture('rtcloud-sample/001_000013_000001.dcm'), join(dir, '001_000013_000001.dcm'));
    const log = watchLog({ dir, gapTimeoutMs: 20000 });
    await sleep(50);
    copyFileSync(fixture('rtcloud-sample/001_000013_000002.dcm'), join(dir, '001_000013_000002.dcm'));
    await log.waitFor((e) => e.type === 'warning', 'old series warning');
    copyFileSync(xa(1), join(dir, '6_1.dcm'));
    await log.waitFor((e) => e.type === 'volume', 'volume of the new series');
    assert.deepEqual(log.labels(), ['warning other', 'run-info', 'volume 0']);
    const warning = log.events[0];
    assert.match(warning.type === 'warning' ? warning.message : '', /series 13 ignored .*: it was in the folder before watching began; pass series 13 to take it/);
  });

  it('takes an existing series when selected', async () => {
    const dir = scratchDir('selected');
    copyFileSync(fixture('rtcloud-sample/001_000013_000001.dcm'), join(dir, '001_000013_000001.dcm'));
    copyFileSync(xa(1), join(dir, '6_1.dcm'));
    const log = watchLog({ dir, series: 13, includeExisting: true, expectedVolumes: 2, gapTimeoutMs: 20000 });
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 0, 'volume 0');
    copyFileSync(fixture('rtcloud-sample/001_000013_000002.dcm'), join(dir, '001_000013_000002.dcm'));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 1, 'volume 1');
    assert.deepEqual(log.labels().filter((l) => l !== 'warning other'), ['run-info', 'volume 0', 'volume 1']);
    assert.equal(log.labels().filter((l) => l === 'warning other').length, 1);
    const info = log.events.find((e) => e.type === 'run-info') as RunInfo;
    assert.deepEqual(info.shape, [64, 64, 27]);
    assert.equal(info.trSec, 1.5);
  });

  it('reports a multi-frame volume with fewer frames as incomplete', { skip: hasPythonModule('pydicom') ? false : 'python3-pydicom is not installed' }, async () => {
    const dir = scratchDir('frames');
    const short = join(scratchDir('frames-src'), '6_2.dcm');
    const py = spawnSync('/usr/bin/python3', ['-c', [
      'import sys, pydicom',
      'ds = pydicom.dcmread(sys.argv[1])',
      'keep = 4',
      'ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:keep]',
      'ds.NumberOfFrames = keep',
      'ds.PixelData = ds.PixelData[: keep * ds.Rows * ds.Columns * 2]',
      'ds.save_as(sys.argv[2])',
    ].join('\n'), xa(2), short], { encoding: 'utf8' });
    assert.equal(py.status, 0, py.stderr);
    const log = watchLog({ dir, gapTimeoutMs: 20000 });
    await sleep(50);
    copyFileSync(xa(1), join(dir, '6_1.dcm'));
    await log.waitFor((e) => e.type === 'volume', 'volume 0');
    copyFileSync(short, join(dir, '6_2.dcm'));
    await log.waitFor((e) => e.type === 'gap', 'gap 1');
    copyFileSync(xa(3), join(dir, '6_3.dcm'));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 2, 'volume 2');
    assert.deepEqual(log.labels(), ['run-info', 'volume 0', 'warning incomplete 1', 'gap 1', 'volume 2']);
    const warning = log.events[2];
    assert.match(warning.type === 'warning' ? warning.message : '', /6_2\.dcm skipped: Volume 1 has grid 64x64x4 but the run has 64x64x6, so it is incomplete and not passed on\. file: .*6_2\.dcm; field: shape; value: "64x64x4"; expected: 64x64x6; fix: export the volume again with all its slices$/);
  });

  it('waits for the REC of a Philips PAR', async () => {
    const dir = scratchDir('parrec');
    const log = watchLog({ dir, format: 'philips', trSec: 1, expectedVolumes: 1, gapTimeoutMs: 20000 });
    await sleep(50);
    copyFileSync(fixture('pyneal/Philips_env/funcData/0001/Dump-0000.par'), join(dir, 'Dump-0000.par'));
    await sleep(300);
    assert.deepEqual(log.labels(), [], 'nothing before the REC is there');
    copyFileSync(fixture('pyneal/Philips_env/funcData/0001/Dump-0000.rec'), join(dir, 'Dump-0000.rec'));
    await log.waitForEnd();
    assert.deepEqual(log.labels(), ['run-info', 'volume 0']);
    const info = log.events[0] as RunInfo;
    assert.deepEqual(info.shape, [80, 80, 15]);
    assert.equal(info.trSec, 1);
  });

  it('reads one NIfTI per volume, gzip found by content', async () => {
    const dir = scratchDir('nifti');
    const log = watchLog({ dir, format: 'nifti', expectedVolumes: 2, gapTimeoutMs: 20000 });
    await sleep(50);
    const ref = referenceOf(REFERENCE_SERIES.find((s) => s.dir === XA)!);
    const n = ref.data.length / 6;
    const write = (idx: number, name: string, gzip: boolean): void => {
      writeFileSync(join(dir, name), encodeNifti(ref.data.subarray(idx * n, (idx + 1) * n), {
        shape: ref.header.shape, voxelSizeMm: ref.header.voxelSizeMm, affine: ref.header.affine, datatype: 'int16', trSec: 0.5, gzip,
      }));
    };
    write(1, 'vol_0001.nii', true); // gzip bytes under a plain .nii name
    write(0, 'vol_0000.nii.gz', false); // plain bytes under a .gz name
    await log.waitForEnd();
    assert.deepEqual(log.labels(), ['run-info', 'volume 0', 'volume 1']);
    for (const e of log.events) if (e.type === 'volume') assertVolumeEquals(e.data, ref, e.volIdx, `volume ${e.volIdx}`);
  });

  it('gaps rejected NIfTI files without the timeout', async () => {
    const dir = scratchDir('rejected');
    const outside = scratchDir('rejected-outside');
    // Ten minutes: the run can only finish if no rejected index waits for the gap timeout.
    const log = watchLog({ dir, format: 'nifti', expectedVolumes: 30, gapTimeoutMs: 600000, corruptTimeoutMs: 300 });
    await sleep(50);
    const ref = referenceOf(REFERENCE_SERIES.find((s) => s.dir === XA)!);
    const n = ref.data.length / 6;
    const header = { shape: ref.header.shape, voxelSizeMm: ref.header.voxelSizeMm, affine: ref.header.affine, datatype: 'int16' as const, trSec: 0.5 };
    const good = (idx: number, gzip = true): Buffer =>
      Buffer.from(encodeNifti(ref.data.subarray((idx % 6) * n, ((idx % 6) + 1) * n), { ...header, gzip }));
    const name = (idx: number, ext = '.nii.gz'): string => join(dir, `vol_${String(idx).padStart(4, '0')}${ext}`);

    for (let idx = 0; idx < 5; idx++) writeFileSync(name(idx), good(idx));
    await log.waitFor((e) => e.type === 'volume' && e.volIdx === 4, 'volume 4');

    const wrongMagic = good(5, false);
    wrongMagic.write('xx1\0', 344, 'latin1');
    writeFileSync(name(5, '.nii'), wrongMagic);
    writeFileSync(name(6), 'not a volume\n'.repeat(40));
    const gzip = good(7);
    writeFileSync(name(7), gzip.subarray(0, gzip.length >> 1));
    const plain = good(8, false);
    writeFileSync(name(8, '.nii'), plain.subarray(0, plain.length - 1000));
    writeFileSync(join(outside, 'vol_0009.nii.gz'), good(9));
    symlinkSync(join(outside, 'vol_0009.nii.gz'), name(9));
    writeFileSync(name(10), Buffer.from(encodeNifti(new Float32Array(4 * 4 * 2), { ...header, shape: [4, 4, 2], gzip: true })));
    const wrongType = good(11, false);
    wrongType.writeInt16LE(128, 70); // RGB24
    writeFileSync(name(11, '.nii'), wrongType);
    writeFileSync(name(12), 'short');

    for (let idx = 13; idx < 30; idx++) writeFileSync(name(idx), good(idx));
    await log.waitForEnd(60000);

    assert.equal(log.completed, true);
    const resolved = log.events.filter((e): e is Volume | Gap => e.type === 'volume' || e.type === 'gap');
    const expected = [...Array(30).keys()].map((i) => (i >= 5 && i <= 12 ? `gap ${i}` : `volume ${i}`));
    assert.deepEqual(resolved.map((e) => `${e.type} ${e.volIdx}`), expected);

    const reasons = new Map(resolved.flatMap((e) => (e.type === 'gap' ? [[e.volIdx, e.reason] as const] : [])));
    assert.equal(reasons.get(5), `volume 5 was invalid: ${name(5, '.nii')}`);
    assert.equal(reasons.get(6), `volume 6 was invalid: ${name(6)}`);
    assert.equal(reasons.get(7), `volume 7 was corrupt: ${name(7)}`);
    assert.equal(reasons.get(8), `volume 8 was corrupt: ${name(8, '.nii')}`);
    assert.equal(reasons.get(9), `volume 9 was invalid: ${name(9)}`);
    assert.equal(reasons.get(10), `volume 10 was invalid: ${name(10)}`);
    assert.equal(reasons.get(11), `volume 11 was invalid: ${name(11, '.nii')}`);
    assert.equal(reasons.get(12), `volume 12 was corrupt: ${name(12)}`);

    // Each gap follows the warning that rejected its file.
    for (let idx = 5; idx <= 12; idx++) {
      const warning = log.events.findIndex((e) => e.type === 'warning' && e.volIdx === idx);
      const gap = log.events.findIndex((e) => e.type === 'gap' && e.volIdx === idx);
      assert.ok(warning >= 0, `warning for volume ${idx}`);
      assert.ok(warning < gap, `warning before gap ${idx}`);
    }
    const warnings = new Map(log.events.flatMap((e) => (e.type === 'warning' && e.volIdx !== undefined ? [[e.volIdx, e.message] as const] : [])));
    assert.match(warnings.get(7)!, /vol_0007\.nii\.gz skipped: The file ends early and is still incomplete after 300 ms without change\. file: .*; field: file size; value: "gzip stream ended early .*"; expected: the data size that the NIfTI header states; fix: export the file again/);
    assert.match(warnings.get(9)!, /symbolic link to a file outside the watched folder/);
    assert.match(warnings.get(10)!, /Volume 10 has grid 4x4x2 but the run has 64x64x6, so it is not passed on\. file: .*; field: shape; .*fix: send one series per run/);
    for (const message of warnings.values()) assert.doesNotMatch(message, /\.;/);
  });

  it('stops on unsubscribe', async () => {
    const dir = scratchDir('stop');
    const log = new EventLog(watchSource({ dir }));
    await sleep(50);
    log.close();
    copyFileSync(xa(1), join(dir, '6_1.dcm'));
    await sleep(300);
    assert.deepEqual(log.labels(), []);
  });

  it('rejects invalid options', () => {
    const dir = scratchDir('options');
    assert.throws(() => watchSource({ dir, gapTimeoutMs: Number('5s') }), /Invalid folder-watch option\.[\s\S]*field: gapTimeoutMs[\s\S]*value: NaN/);
    assert.throws(() => watchSource({ dir, format: 'dicom' as never }), /field: format[\s\S]*expected: auto, siemens, siemens-xa, ge, philips, nifti/);
    assert.throws(() => watchSource({ dir, series: -1 }), /field: series/);
    assert.throws(() => watchSource({ dir, trSec: 0 }), /field: trSec/);
    assert.throws(() => watchSource({ dir, expectedVolumes: 2.5 }), /field: expectedVolumes/);
    assert.throws(() => watchSource({ dir, rescanMs: 0 }), /field: rescanMs[\s\S]*at least 10 ms/);
  });

  it('fails clearly on a missing folder', async () => {
    const log = watchLog({ dir: join(scratchDir('missing'), 'not-there') });
    await sleep(20);
    assert.match(String(log.error), /The watched folder cannot be read[\s\S]*ENOENT[\s\S]*create the folder the scanner exports to/);
  });
});
