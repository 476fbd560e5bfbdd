"""Moves a motion-free simulated run by the documented convention, independently of src/sim.

Usage: motion_reference.py MOVING.nii.gz STILL.nii.gz BRAINMASK.nii.gz MOTION.tsv [STRIDE]

STRIDE (default 1) checks every STRIDE-th volume only.

For each volume t, grid point q takes the still run's value at R^T (q - c - t) + c, where
R = Rz Ry Rx and c is the world position of the grid centre (docs/simulation.md). Points are
interpolated trilinearly with 0 outside the grid (scipy's 'grid-constant' mode), and voxels whose
moved brain-mask weight is below 0.5 are set to 0. Prints JSON: the largest absolute difference
where both runs are non-zero, and the largest fraction of voxels that are zero in only one run.
"""
import json
import sys

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates


def rotation(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def main(moving_file, still_file, brain_file, motion_file, stride='1'):
    moving_img = nib.load(moving_file)
    moving = np.asarray(moving_img.dataobj).astype(np.float64)
    still = np.asarray(nib.load(still_file).dataobj).astype(np.float64)
    brain = np.asarray(nib.load(brain_file).dataobj).astype(np.float64)
    affine = moving_img.affine
    motion = np.loadtxt(motion_file, skiprows=1)
    shape = np.array(moving.shape[:3])
    centre = affine[:3, :3] @ ((shape - 1) / 2) + affine[:3, 3]
    ijk = np.indices(moving.shape[:3]).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    inverse = np.linalg.inv(affine)
    worst_diff = 0.0
    worst_mismatch = 0.0
    for t in range(0, moving.shape[3], int(stride)):
        tx, ty, tz, rx, ry, rz = motion[t]
        source = rotation(rx, ry, rz).T @ (world - centre[:, None] - np.array([[tx], [ty], [tz]])) + centre[:, None]
        vox = inverse[:3, :3] @ source + inverse[:3, 3:4]
        expected = map_coordinates(still[..., t], vox, order=1, mode='grid-constant', cval=0).reshape(moving.shape[:3])
        weight = map_coordinates(brain, vox, order=1, mode='grid-constant', cval=0).reshape(moving.shape[:3])
        expected[weight < 0.5] = 0
        observed = moving[..., t]
        both = (expected != 0) & (observed != 0)
        worst_diff = max(worst_diff, float(np.abs(expected[both] - observed[both]).max()))
        worst_mismatch = max(worst_mismatch, float(((expected != 0) != (observed != 0)).sum() / both.sum()))
    print(json.dumps({'maxAbsDiff': worst_diff, 'maxZeroMismatchFraction': worst_mismatch}))


if __name__ == '__main__':
    main(*sys.argv[1:6])
