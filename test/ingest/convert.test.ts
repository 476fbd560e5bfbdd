import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { readNifti } from '../../src/io/nifti.ts';
import {
  affineError, assertVolumeEquals, dicomFiles, fixture, hasDcm2niix, hasPythonModule, REFERENCE_SERIES, referenceOf,
  runCli, runDcm2niix, scratchDir,
} from './helpers.ts';

function convert(args: string[]): ReturnType<typeof runCli> {
  return runCli(['convert', ...args]);
}

/** Copies the fixture files of a series (without README, licence or reference) into a fresh folder. */
function stage(dir: string, files = dicomFiles(dir)): string {
  const target = scratchDir('series');
  for (const f of files) copyFileSync(f, join(target, f.split('/').pop()!));
  return target;
}

describe('convert against dcm2niix references', () => {
  for (const series of REFERENCE_SERIES) {
    it(`matches the reference: ${series.name}`, async () => {
      const out = join(scratchDir('convert'), 'out.nii.gz');
      const result = await convert([stage(series.dir), '--out', out]);
      assert.equal(result.status, 0, result.stderr);
      const ours = readNifti(out);
      const ref = referenceOf(series);
      assert.deepEqual(ours.header.shape, ref.header.shape);
      assert.equal(ours.header.volumes, series.volumes);
      assert.ok(affineError(ours.header.affine, ref.header.affine) < 1e-3, `affine differs by ${affineError(ours.header.affine, ref.header.affine)} mm`);
      for (let v = 0; v < series.volumes; v++) {
        const n = ref.data.length / series.volumes;
        assertVolumeEquals(ours.data.subarray(v * n, (v + 1) * n), ref, v, `volume ${v}`);
      }
      const sidecar = JSON.parse(readFileSync(out.replace('.nii.gz', '.json'), 'utf8'));
      const refSidecar = JSON.parse(readFileSync(fixture(series.dir, 'reference', series.sidecar), 'utf8'));
      assert.equal(sidecar.RepetitionTime, refSidecar.RepetitionTime);
      assert.equal(sidecar.SliceTiming.length, refSidecar.SliceTiming.length);
      sidecar.SliceTiming.forEach((t: number, i: number) => assert.ok(Math.abs(t - refSidecar.SliceTiming[i]) < 1e-4, `slice ${i}: ${t} vs ${refSidecar.SliceTiming[i]}`));
    });
  }
});

describe('convert against Debian dcm2niix', () => {
  const cases = [
    { name: 'rt-cloud mosaics (interleaved, odd slice count)', dir: 'rtcloud-sample' },
    { name: 'pyneal Siemens mosaic', dir: 'pyneal/Siemens_env/funcData' },
    { name: 'pyneal GE slices (oblique)', dir: 'pyneal/GE_env/funcData/s1925' },
  ];
  for (const c of cases) {
    it(`matches dcm2niix: ${c.name}`, { skip: hasDcm2niix() ? false : 'dcm2niix is not installed (apt-get install dcm2niix)' }, async () => {
      const input = stage(c.dir);
      const out = join(scratchDir('convert'), 'out.nii');
      const result = await convert([input, '--out', out]);
      assert.equal(result.status, 0, result.stderr);
      const ours = readNifti(out);
      const ref = runDcm2niix(input);
      assert.deepEqual(ours.header.shape, ref.header.shape);
      assert.equal(ours.header.volumes, ref.header.volumes);
      assert.ok(affineError(ours.header.affine, ref.header.affine) < 1e-3, `affine differs by ${affineError(ours.header.affine, ref.header.affine)} mm`);
      for (let v = 0; v < ref.header.volumes; v++) {
        const n = ref.data.length / ref.header.volumes;
        assertVolumeEquals(ours.data.subarray(v * n, (v + 1) * n), ref, v, `volume ${v}`);
      }
    });
  }

  it('matches nibabel on Philips PAR/REC', { skip: hasPythonModule('nibabel') ? false : 'python3-nibabel is not installed' }, async () => {
    const input = stage('pyneal/Philips_env/funcData/0001', [
      fixture('pyneal/Philips_env/funcData/0001/Dump-0000.par'), fixture('pyneal/Philips_env/funcData/0001/Dump-0000.rec'),
    ]);
    const out = join(scratchDir('convert'), 'out.nii');
    const result = await convert([input, '--out', out]);
    assert.equal(result.status, 0, result.stderr);
    const ours = readNifti(out);
    // nibabel orders the two image types of this REC as volumes; type 17 (REC images 0-14) is volume 1.
    const refPath = join(scratchDir('nibabel'), 'ref.nii');
    const py = spawnSync('/usr/bin/python3', ['-c', [
      'import sys, nibabel as nib, numpy as np',
      'im = nib.load(sys.argv[1], strict_sort=True, scaling="dv")',
      'nib.save(nib.Nifti1Image(np.asarray(im.dataobj)[..., 1].astype(np.float32), im.affine), sys.argv[2])',
    ].join('\n'), join(input, 'Dump-0000.par'), refPath], { encoding: 'utf8' });
    assert.equal(py.status, 0, py.stderr);
    const ref = readNifti(refPath);
    assert.deepEqual(ours.header.shape, ref.header.shape);
    assert.ok(affineError(ours.header.affine, ref.header.affine) < 1e-3, `affine differs by ${affineError(ours.header.affine, ref.header.affine)} mm`);
    let maxDiff = 0;
    for (let i = 0; i < ref.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ours.data[i] - ref.data[i]));
    // Displayed values are not integers; both sides store them as float32.
    assert.ok(maxDiff < 1e-2, `max difference ${maxDiff}`);
  });
});

/** Asserts that `convert ARGS` exits with status 1 and an error on stderr matching `pattern`. */
async function assertFails(args: string[], pattern: RegExp): Promise<void> {
  const result = await convert(args);
  assert.equal(result.status, 1, `status ${result.status}, stdout ${result.stdout}`);
  assert.match(result.stderr, pattern);
}

describe('convert input checks', () => {
  it('rejects a folder with two series', async () => {
    const input = stage('rtcloud-sample');
    copyFileSync(fixture('pyneal/Siemens_env/funcData/001_000013_000001.dcm'), join(input, 'other.dcm'));
    copyFileSync(fixture('siemens-mosaic/ep2d_Asc_2/IM-0001-0001.dcm'), join(input, 'IM-0001-0001.dcm'));
    await assertFails([input, '--out', join(input, 'x.nii')], /more than one series[\s\S]*--series N with N one of 2, 13/);
  });

  it('converts the series chosen with --series', async () => {
    const input = stage('rtcloud-sample');
    copyFileSync(fixture('siemens-mosaic/ep2d_Asc_2/IM-0001-0001.dcm'), join(input, 'IM-0001-0001.dcm'));
    const out = join(scratchDir('convert'), 'out.nii');
    const result = await convert([input, '--out', out, '--series', '2']);
    assert.equal(result.status, 0);
    assert.match(result.stderr, /series 13 ignored/);
    assert.deepEqual(readNifti(out).header.shape, [64, 64, 36]);
  });

  it('skips a non-DICOM file with a warning', async () => {
    const input = stage('ge-realtime-slices/2_epiRT_ascending');
    copyFileSync(fixture('ge-realtime-slices/README.md'), join(input, 'notes.txt'));
    const out = join(scratchDir('convert'), 'out.nii');
    const result = await convert([input, '--out', out]);
    assert.equal(result.status, 0);
    assert.match(result.stderr, /warning \(invalid\): .*notes\.txt skipped: The file is neither DICOM, NIfTI nor a Philips PAR header/);
    assert.equal(readNifti(out).header.volumes, 3);
  });

  it('rejects a wrong --format with the detected one', async () => {
    const input = stage('siemens-xa-enhanced/6_REST1_w_SMS_PF7-8');
    await assertFails([input, '--out', join(input, 'x.nii'), '--format', 'siemens'], /No readable volume[\s\S]*requested format/);
  });

  it('rejects a missing --out', async () => {
    await assertFails([fixture('rtcloud-sample')], /needs one input folder and --out/);
  });

  it('reports an empty folder', async () => {
    const input = scratchDir('empty');
    mkdirSync(join(input, 'sub'));
    await assertFails([input, '--out', join(input, 'x.nii')], /No readable volume was found/);
  });
});
