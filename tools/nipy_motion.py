#!/usr/bin/python3
"""Reference rigid motion estimates from nipy, for comparison with mindeye-rt's motion correction.

Registers volumes of a 4D NIfTI series to one reference volume with nipy's
HistogramRegistration and a Rigid transform (the registration pyneal runs in real time), and
writes the parameters in mindeye-rt's convention as JSON:

    xyzMovingMm = R (xyzRefMm - c) + c + t,   R = Rz(rz) Ry(ry) Rx(rx)

with c the world position of the reference grid's centre voxel ((n-1)/2 on each axis). nipy's
transform maps the `from` image's world space to the `to` image's. With the reference as `from`,
it is the matrix above expressed about the world origin, which this script converts.

Run with Debian's interpreter, which has python3-nipy and python3-nibabel:

    /usr/bin/python3 tools/nipy_motion.py SERIES.nii.gz --reference-volume 0 --out motion.json

Exit status 3 means nipy is not installed (callers skip their comparison).
"""
import argparse
import json
import math
import sys
import time

try:
    import numpy as np
    import nibabel as nib
    import nipy
    from nipy.algorithms.registration import HistogramRegistration, Rigid
    import nipy.algorithms.registration.histogram_registration as histogram_registration
except ImportError as err:  # pragma: no cover - depends on the machine
    sys.stderr.write(f'nipy_motion.py: nipy or nibabel is not installed ({err}); '
                     'install python3-nipy and python3-nibabel (Debian) to run this tool\n')
    sys.exit(3)


def euler_zyx(rotation):
    """(rx, ry, rz) of R = Rz Ry Rx; see src/preprocess/rigid.ts for the same formulas."""
    sy = -max(-1.0, min(1.0, rotation[2, 0]))
    ry = math.asin(sy)
    if abs(sy) > 1 - 1e-12:
        return [0.0, ry, math.atan2(-rotation[0, 1], rotation[1, 1])]
    return [math.atan2(rotation[2, 1], rotation[2, 2]), ry, math.atan2(rotation[1, 0], rotation[0, 0])]


def to_convention(matrix, centre):
    rotation = matrix[:3, :3]
    translation = matrix[:3, 3] - centre + rotation @ centre
    return [float(x) for x in translation], euler_zyx(rotation)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('series', help='4D NIfTI series (.nii or .nii.gz)')
    parser.add_argument('--reference-volume', type=int, default=0,
                        help='0-based index of the reference volume in the series (default 0)')
    parser.add_argument('--volumes', default=None,
                        help='comma-separated 0-based volume indices to register (default: all)')
    parser.add_argument('--similarity', default='cc',
                        help="nipy similarity measure: cc, cr, crl1, mi, nmi (default cc, for same-contrast EPI)")
    parser.add_argument('--pyneal-settings', action='store_true',
                        help="use pyneal's real-time settings (crl1, maxiter 1, maxfun 35, ftol 1) "
                             'instead of a converged optimization')
    parser.add_argument('--out', required=True, help='output JSON file')
    args = parser.parse_args()

    histogram_registration.VERBOSE = False
    image = nib.load(args.series)
    if len(image.shape) != 4:
        sys.stderr.write(f'nipy_motion.py: {args.series} has shape {image.shape}; expected a 4D series\n')
        return 2
    data = np.asarray(image.dataobj, dtype=np.float32)
    count = data.shape[3]
    if not 0 <= args.reference_volume < count:
        sys.stderr.write(f'nipy_motion.py: --reference-volume {args.reference_volume} is outside 0..{count - 1}\n')
        return 2
    indices = list(range(count)) if args.volumes is None else [int(x) for x in args.volumes.split(',')]
    affine = image.affine
    shape = np.array(data.shape[:3], dtype=float)
    centre = (affine @ np.append((shape - 1) / 2, 1.0))[:3]
    reference = nib.Nifti1Image(data[..., args.reference_volume], affine)

    if args.pyneal_settings:
        similarity, optimize_kwargs = 'crl1', dict(maxiter=1, maxfun=35, ftol=1)
    else:
        similarity, optimize_kwargs = args.similarity, dict(xtol=1e-3, ftol=1e-5)

    results = []
    transform = Rigid()
    for index in indices:
        moving = nib.Nifti1Image(data[..., index], affine)
        start = time.perf_counter()
        registration = HistogramRegistration(reference, moving, similarity=similarity, interp='tri')
        # Warm start from the previous volume, as an online pipeline does.
        transform = registration.optimize(transform.copy(), optimizer='powell', **optimize_kwargs)
        seconds = time.perf_counter() - start
        matrix = transform.as_affine()
        translation, rotation = to_convention(matrix, centre)
        results.append({'index': index, 'translationMm': translation, 'rotationRad': rotation,
                        'matrix': [float(x) for x in matrix.ravel()], 'seconds': seconds})

    with open(args.out, 'w', encoding='utf-8') as out:
        json.dump({'tool': 'nipy HistogramRegistration (Rigid, powell, trilinear)', 'nipyVersion': nipy.__version__,
                   'similarity': similarity, 'optimize': optimize_kwargs,
                   'referenceVolume': args.reference_volume, 'centreMm': [float(x) for x in centre],
                   'volumes': results}, out, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
