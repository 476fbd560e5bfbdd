import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadAnatomy, NSD_SHAPE } from '../../src/sim/anatomy.ts';

describe('simulated anatomy', () => {
  test('nsd grid is 81x104x83 at 1.8 mm', () => {
    const anatomy = loadAnatomy('nsd');
    assert.deepEqual(anatomy.shape, NSD_SHAPE);
    assert.deepEqual(anatomy.shape, [81, 104, 83]);
    assert.deepEqual(anatomy.voxelSizeMm, [1.8, 1.8, 1.8]);
    const a = anatomy.affine;
    assert.deepEqual([a[0], a[5], a[10], a[15]], [1.8, 1.8, 1.8, 1], 'axis-aligned RAS+');
    assert.deepEqual([a[1], a[2], a[4], a[6], a[8], a[9], a[12], a[13], a[14]], [0, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  test('nsd grid ROI scales with voxel volume', () => {
    const nsd = loadAnatomy('nsd');
    const epi = loadAnatomy('epi');
    const nsdMm3 = nsd.roiIndices.length * 1.8 ** 3;
    const epiMm3 = epi.roiIndices.length * epi.voxelSizeMm[0] * epi.voxelSizeMm[1] * epi.voxelSizeMm[2];
    assert.ok(Math.abs(nsdMm3 - epiMm3) / epiMm3 < 0.01, `ROI ${nsdMm3.toFixed(0)} mm^3 on nsd, ${epiMm3.toFixed(0)} mm^3 on epi`);
    assert.ok(nsd.roiIndices.length > 5000, `${nsd.roiIndices.length} ROI voxels on the nsd grid`);
  });

  test('baseline is zero outside the brain', () => {
    for (const grid of ['nsd', 'epi'] as const) {
      const anatomy = loadAnatomy(grid);
      let outside = 0;
      let inside = 0;
      for (let i = 0; i < anatomy.brain.length; i++) {
        if (anatomy.brain[i] === 0 && anatomy.baseline[i] !== 0) outside++;
        if (anatomy.brain[i] === 1 && anatomy.baseline[i] < 400) inside++;
      }
      assert.equal(outside, 0, `${grid}: non-zero baseline outside the brain`);
      assert.equal(inside, 0, `${grid}: brain voxels below the 400 floor`);
    }
  });

  test('missing EPI file is reported', () => {
    assert.throws(() => loadAnatomy('epi', '/nonexistent/epi.nii.gz'), /anatomy EPI is missing[\s\S]*\/nonexistent\/epi\.nii\.gz/);
  });
});
