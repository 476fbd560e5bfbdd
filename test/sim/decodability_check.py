"""Measures how much image information a simulated dataset carries (not run by npm test).

Usage: /usr/bin/python3 test/sim/decodability_check.py DATASET_DIR

DATASET_DIR is the output of `mindeye-rt simulate` with at least one training and one test run.
For every run, least-squares-all betas are fitted (one SPM canonical regressor per trial, peak 1,
plus an intercept and the three slowest DCT drift regressors) and expressed in percent signal
change. The script prints:
- oracle identification in the first test run: how often a trial's estimated pattern
  correlates best with its own ground-truth pattern among the run's trials;
- a ridge decoder from z-scored training betas to an 8 x 8 RGB thumbnail of each image, tested
  on the held-out trials: top-1 among the distinct test images and two-way identification.
Takes about a minute for one training session on two cores.
"""
import json
import sys

import h5py
import nibabel as nib
import numpy as np
from scipy.stats import gamma
from skimage.transform import resize

TR_SEC = 4 / 3


def hrf_integral(t):
    t = np.minimum(t, 32)
    return np.where(t > 0, gamma.cdf(t, 6) - gamma.cdf(t, 16) / 6, 0)


def boxcar(t, duration=3):
    return hrf_integral(t) - np.where(t > duration, hrf_integral(t - duration), 0)


PEAK = boxcar(np.arange(0, 40, 0.001)).max()


def run_betas(root, roi, tag):
    img = nib.load(f'{root}/nsddata_timeseries/ppdata/subj01/func1pt8mm/timeseries/timeseries_{tag}.nii.gz')
    data = np.asarray(img.dataobj).astype(np.float64)
    volumes = data.shape[3]
    series = data.reshape(-1, volumes, order='F')[roi == 1]
    design = np.loadtxt(f'{root}/nsddata_timeseries/ppdata/subj01/func1pt8mm/design/design_{tag}.tsv').astype(int)
    onsets = np.nonzero(design)[0]
    times = np.arange(volumes) * TR_SEC
    trials = np.stack([boxcar(times - row * TR_SEC) / PEAK for row in onsets], 1)
    drift = np.stack([np.cos(np.pi * k * (np.arange(volumes) + 0.5) / volumes) for k in range(1, 4)], 1)
    full = np.hstack([trials, np.ones((volumes, 1)), drift])
    coef, *_ = np.linalg.lstsq(full, series.T, rcond=None)
    baseline = np.maximum(coef[len(onsets)], 1)
    return 100 * coef[:len(onsets)] / baseline, design[onsets]


def main(root):
    roi = np.asarray(nib.load(f'{root}/nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz').dataobj).reshape(-1, order='F')
    marker = json.load(open(f'{root}/mindeye-rt.json'))
    tag = lambda r: f"session{r['session']:02d}_run{r['run']:02d}"
    train = [r for r in marker['runs'] if r['split'] == 'train']
    test = [r for r in marker['runs'] if r['split'] == 'test']
    if not train or not test:
        sys.exit('decodability_check: the dataset needs at least one training and one test run')

    betas, ids = run_betas(root, roi, tag(test[0]))
    meta = json.load(open(f'{root}/simulation/betas_{tag(test[0])}.json'))
    truth = np.fromfile(f'{root}/simulation/betas_{tag(test[0])}.f32', dtype='<f4').reshape(meta['shape'])
    corr = np.corrcoef(betas - betas.mean(0), truth - truth.mean(0))[:len(truth), len(truth):]
    voxel_r = np.median([np.corrcoef(betas[:, v], truth[:, v])[0, 1] for v in range(truth.shape[1])])
    print(f'oracle identification, first test run: {(corr.argmax(1) == np.arange(len(truth))).mean():.3f} '
          f'of {len(truth)} trials (chance {1 / len(truth):.3f}); median voxel r {voxel_r:.3f}')

    zscore = lambda b: (b - b.mean(0)) / (b.std(0) + 1e-6)
    train_betas, train_ids = zip(*[run_betas(root, roi, tag(r)) for r in train])
    test_betas, test_ids = zip(*[run_betas(root, roi, tag(r)) for r in test])
    x_train, y_ids = zscore(np.vstack(train_betas)), np.concatenate(train_ids)
    x_test, t_ids = zscore(np.vstack(test_betas)), np.concatenate(test_ids)
    brick = h5py.File(f'{root}/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5', 'r')['imgBrick']
    thumbs = {i: resize(brick[i - 1].astype(np.float32) / 255, (8, 8, 3), anti_aliasing=True).ravel() for i in set(y_ids) | set(t_ids)}
    targets = np.array([thumbs[i] for i in y_ids])
    mean, sd = targets.mean(0), targets.std(0) + 1e-6
    candidates = sorted(set(t_ids))
    cand = np.array([(thumbs[i] - mean) / sd for i in candidates])
    truth_index = np.array([candidates.index(i) for i in t_ids])
    for alpha in [1e2, 1e3, 1e4]:
        weights = np.linalg.solve(x_train.T @ x_train + alpha * np.eye(x_train.shape[1]), x_train.T @ ((targets - mean) / sd))
        scores = np.corrcoef(x_test @ weights, cand)[:len(t_ids), len(t_ids):]
        top1 = (scores.argmax(1) == truth_index).mean()
        two_way = np.mean([(scores[k, truth_index[k]] > scores[k]).sum() / (len(candidates) - 1) for k in range(len(t_ids))])
        print(f'ridge alpha {alpha:g}: {len(y_ids)} training trials, {len(t_ids)} test trials, {len(candidates)} candidates: '
              f'top-1 {top1:.3f} (chance {1 / len(candidates):.3f}), two-way {two_way:.3f}')


if __name__ == '__main__':
    main(sys.argv[1])
