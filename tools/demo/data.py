"""Inputs of the demo trainer: photo crops, the simulator's NSD-layout dataset and trial betas.

Voxel order everywhere is NIfTI order inside the mask (x fastest), the order the live pipeline
uses, so arrays are flattened with order='F'.
"""
import json
import os
import re

import numpy as np
from PIL import Image

from nets import IMAGE_SIZE

TR_SEC = 4.0 / 3.0
PHOTO_SUFFIXES = ('.png', '.jpg', '.jpeg')


def load_photo(path: str) -> Image.Image:
    return Image.open(path).convert('RGB')


def list_photos(photos_dir: str) -> list:
    names = sorted(n for n in os.listdir(photos_dir) if n.lower().endswith(PHOTO_SUFFIXES))
    if not names:
        raise SystemExit(f'error: no photographs (*.png, *.jpg) in {photos_dir}; pass --photos DIR')
    return names


def random_crops(photos_dir: str, names: list, count: int, rng: np.random.Generator) -> np.ndarray:
    """Square crops (side 30-100% of the photo's short side, random position, random
    horizontal flip) resized to IMAGE_SIZE; uint8 [count, 64, 64, 3]."""
    photos = [load_photo(os.path.join(photos_dir, n)) for n in names]
    out = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        width, height = photo.size
        side = int(min(width, height) * rng.uniform(0.3, 1.0))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        crop = photo.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC, box=(left, top, left + side, top + side), reducing_gap=3.0)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(crop)
    return out


def to_tensor_images(images_uint8: np.ndarray):
    import torch
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(255.0)


def energy_descriptor(images_uint8: np.ndarray, grid: int = 4) -> np.ndarray:
    """Describe each image by V1-like energy statistics on a grid x grid layout: local luminance
    contrast, gradient energy at 0, 45, 90 and 135 degrees, and red-green and blue-yellow colour
    contrast, each averaged per block, square-rooted and log-compressed. float32 [N, 7 * grid^2]."""
    from scipy.ndimage import uniform_filter
    out = []
    for image in images_uint8.astype(np.float32) / 255.0:
        gray = image.mean(axis=-1)
        grad_y, grad_x = np.gradient(gray)
        maps = [
            (gray - uniform_filter(gray, 3)) ** 2,
            grad_x ** 2,
            ((grad_x + grad_y) / np.sqrt(2)) ** 2,
            grad_y ** 2,
            ((grad_x - grad_y) / np.sqrt(2)) ** 2,
            (image[..., 0] - image[..., 1]) ** 2,
            (image[..., 2] - (image[..., 0] + image[..., 1]) / 2) ** 2,
        ]
        size = gray.shape[0] // grid
        blocks = [np.sqrt(m[:size * grid, :size * grid].reshape(grid, size, grid, size).mean(axis=(1, 3))).ravel() for m in maps]
        out.append(np.log(np.concatenate(blocks) + 0.01))
    return np.array(out, dtype=np.float32)


def resize_images(images_uint8: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(images_uint8), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images_uint8):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC, reducing_gap=3.0))
    return out


class NsdLayout:
    """Paths of a simulated (or NSD) dataset for subject 1."""

    def __init__(self, root: str, subject: int = 1):
        self.root = root
        subj = f'subj{subject:02d}'
        self.timeseries_dir = os.path.join(root, 'nsddata_timeseries', 'ppdata', subj, 'func1pt8mm', 'timeseries')
        self.design_dir = os.path.join(root, 'nsddata_timeseries', 'ppdata', subj, 'func1pt8mm', 'design')
        self.roi = os.path.join(root, 'nsddata', 'ppdata', subj, 'func1pt8mm', 'roi', 'nsdgeneral.nii.gz')
        self.stimuli = os.path.join(root, 'nsddata_stimuli', 'stimuli', 'nsd', 'nsd_stimuli.hdf5')
        self.split_file = os.path.join(root, 'simulation', 'stimuli.json')
        for path in (self.design_dir, self.roi, self.stimuli):
            if not os.path.exists(path):
                raise SystemExit(f'error: {path} not found; pass --data DIR written by `mindeye-rt simulate`')

    def runs(self) -> list:
        """(session, run) pairs that have a design TSV, sorted."""
        pattern = re.compile(r'design_session(\d+)_run(\d+)\.tsv$')
        pairs = []
        for name in os.listdir(self.design_dir):
            match = pattern.match(name)
            if match:
                pairs.append((int(match.group(1)), int(match.group(2))))
        return sorted(pairs)

    def design_path(self, session: int, run: int) -> str:
        return os.path.join(self.design_dir, f'design_session{session:02d}_run{run:02d}.tsv')

    def timeseries_path(self, session: int, run: int) -> str:
        return os.path.join(self.timeseries_dir, f'timeseries_session{session:02d}_run{run:02d}.nii.gz')

    def read_design(self, session: int, run: int) -> list:
        """(onset TR index, 73k-style id) for every stimulus trial of a run."""
        with open(self.design_path(session, run)) as f:
            ids = [int(line.strip()) for line in f if line.strip()]
        return [(row, image_id) for row, image_id in enumerate(ids) if image_id != 0]

    def read_split(self) -> dict:
        """id -> {'split': 'train'|'test', 'photo': file name}, from simulation/stimuli.json."""
        if not os.path.exists(self.split_file):
            return {}
        with open(self.split_file) as f:
            doc = json.load(f)
        entries = doc
        if isinstance(doc, dict):
            entries = doc.get('images', doc.get('stimuli', doc.get('crops', [])))
        split = {}
        for entry in entries:
            split[int(entry['id'])] = {'split': entry.get('split'), 'photo': entry.get('photo') or entry.get('sourcePhoto') or entry.get('source')}
        return split

    def read_mask(self):
        import nibabel as nib
        roi = nib.load(self.roi)
        values = np.asarray(roi.dataobj)
        return roi, np.flatnonzero(values.ravel(order='F') == 1)

    def read_stimuli(self, ids) -> np.ndarray:
        """uint8 [len(ids), 425, 425, 3] for 1-based ids (HDF5 row = id - 1)."""
        import h5py
        with h5py.File(self.stimuli, 'r') as f:
            brick = f['imgBrick']
            return np.stack([brick[i - 1] for i in ids])


def spm_hrf(dt_sec: float, length_sec: float = 32.0) -> np.ndarray:
    """SPM's canonical double-gamma HRF (peak shape 6, undershoot shape 16, ratio 1/6), unit sum."""
    from scipy.stats import gamma
    t = np.arange(0.0, length_sec, dt_sec)
    hrf = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    return hrf / hrf.sum()


def lss_betas(timeseries: np.ndarray, onsets_sec: list, tr_sec: float = TR_SEC, duration_sec: float = 3.0,
              after_sec: float = 5.0) -> np.ndarray:
    """Compute least-squares-separate betas as the live GLM (src/preprocess/glm.ts) does with its
    defaults. Each trial gets its own fit with the trial's regressor, one regressor for all
    other trials and Legendre drift of order 0-2 over the whole run. The fit uses the volumes
    from run start to onset + duration + after_sec. Betas are in raw signal units, as the live
    pipeline's are. timeseries: [V, T]; returns [trials, V] float32."""
    volume_count = timeseries.shape[1]
    dt = tr_sec / 16.0
    hrf = spm_hrf(dt)
    fine_count = int(np.ceil(volume_count * tr_sec / dt)) + 1
    fine_time = np.arange(fine_count) * dt
    sample_index = np.round(np.arange(volume_count) * tr_sec / dt).astype(int)
    regressors = []
    for onset in onsets_sec:
        boxcar = ((fine_time >= onset) & (fine_time < onset + duration_sec)).astype(np.float64)
        regressors.append(np.convolve(boxcar, hrf)[:fine_count][sample_index])
    regressors = np.array(regressors)
    total = regressors.sum(axis=0)
    x = np.linspace(-1.0, 1.0, volume_count)
    drift = np.stack([np.ones(volume_count), x, 1.5 * x * x - 0.5], axis=1)
    data = timeseries.astype(np.float64)
    betas = np.empty((len(onsets_sec), data.shape[0]), dtype=np.float32)
    for k, onset in enumerate(onsets_sec):
        last = min(volume_count, int(np.floor((onset + duration_sec + after_sec) / tr_sec)) + 1)
        design = np.column_stack([regressors[k, :last], total[:last] - regressors[k, :last], drift[:last]])
        coef, *_ = np.linalg.lstsq(design, data[:, :last].T, rcond=None)
        betas[k] = coef[0]
    return betas


def run_lss_betas(layout: NsdLayout, voxel_index: np.ndarray, session: int, run: int):
    """(ids, betas [trials, V]) for one run, from its time series and design (no motion
    correction, so these differ slightly from the live pipeline's betas)."""
    import nibabel as nib
    image = nib.load(layout.timeseries_path(session, run))
    data = np.asarray(image.dataobj, dtype=np.float32)
    flat = data.reshape(-1, data.shape[-1], order='F')[voxel_index]
    trials = layout.read_design(session, run)
    ids = [image_id for _, image_id in trials]
    onsets = [row * TR_SEC for row, _ in trials]
    return ids, lss_betas(flat, onsets)


def read_recorded_betas(record_dir: str, voxel_count: int):
    """(ids, betas) from a `replay --record-to` folder: trials.jsonl and betas_final.f32."""
    with open(os.path.join(record_dir, 'trials.jsonl')) as f:
        trials = [json.loads(line) for line in f if line.strip()]
    raw = np.fromfile(os.path.join(record_dir, 'betas_final.f32'), dtype='<f4')
    if raw.size % voxel_count != 0:
        raise SystemExit(f'error: {record_dir}/betas_final.f32 has {raw.size} values, not a multiple of the mask\'s {voxel_count} voxels')
    matrix = raw.reshape(-1, voxel_count)
    ids, rows = [], []
    for trial in trials:
        stimulus = trial.get('stimulusId')
        if stimulus is None or str(stimulus) in ('', '0'):
            continue
        ids.append(int(stimulus))
        rows.append(matrix[int(trial['row'])])
    return ids, np.array(rows, dtype=np.float32)
