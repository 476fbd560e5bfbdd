"""Train the demo decoder and its image models, evaluate them and write a model directory.

Run by `mindeye-rt train-demo` (src/cli/train-demo.ts), which also simulates the data and
records the live pipeline's betas; run directly for development:

    /usr/bin/python3 tools/demo/train_demo.py --data SIM_DIR --photos data/photos --out DIR \
        [--betas-dir RECORDS | --betas lss] [--seed 0] [--quick] [--threads 2]

Stages: the image autoencoder, the image encoder (contrastive) and the conditional latent
denoiser train on crops of the training photographs. The brain decoder (backbone, retrieval
head, low-level head) then trains on the training trials' betas. Evaluation uses the held-out
test trials, and the export writes ONNX files with manifest.json, image bank and thumbnails.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import data as data_io  # noqa: E402
import metrics  # noqa: E402
from nets import (EMBED_DIM, IMAGE_SIZE, LATENT_SHAPE, AutoEncoder, BrainDecoder, Denoiser, ImageEncoder,  # noqa: E402
                  ScaledDecoder, count_parameters)

ONNX_OPSET = 17
TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
DDIM_STEPS, STRENGTH = 20, 0.85
CONDITION_DROP = 0.15
# About 1.6 MB of float32 weights for the backbone and its two heads.
BRAIN_PARAMETER_BUDGET = 400_000
AE_WIDTH, ENCODER_WIDTH, UNET_WIDTH, UNET_EMBED_WIDTH = 16, 16, 24, 96

# Sizes of the full and the --quick run. The quick run exists for the end-to-end test and
# makes a working but poor model.
SIZES = {
    'full': dict(crops=5000, ae_steps=350, encoder_steps=600, unet_steps=1500, brain_epochs=30, eval_img2img=64, eval_trials=100000),
    'quick': dict(crops=400, ae_steps=25, encoder_steps=30, unet_steps=60, brain_epochs=4, eval_img2img=8, eval_trials=24),
}


def log(stage: str, message: str, **fields) -> None:
    record = {'time': datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S'), 'stage': stage, 'msg': message, **fields}
    print(json.dumps(record), file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', required=True, help='dataset written by `mindeye-rt simulate` (NSD layout)')
    p.add_argument('--photos', required=True, help='folder of the source photographs (data/photos)')
    p.add_argument('--out', required=True, help='model directory to write')
    p.add_argument('--work', help='folder for checkpoints, cached betas and the evaluation images (default: TMPDIR/mindeye-rt-train-demo)')
    p.add_argument('--betas-dir', help='folder with one `replay --record-to` folder per run, named sessionNN_runCC')
    p.add_argument('--betas', choices=['record', 'lss'], default='record',
                   help='record: read --betas-dir; lss: least-squares-separate betas computed here from the time series')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--quick', action='store_true', help='reduced sizes for tests (a poor model in about a minute)')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--niceness', type=int, default=10, help='added to the process niceness, so training yields the CPU to other work (0: unchanged)')
    p.add_argument('--hidden', type=int, default=0, help='backbone width (default: chosen from the voxel count to fit the size budget)')
    p.add_argument('--image-models', help='reuse the image models from this checkpoint (image_models.pt) instead of training them')
    p.add_argument('--images-only', action='store_true',
                   help='train only the image models on the training photographs of --data (its stimuli.json) and save WORK/image_models.pt')
    p.add_argument('--command', default='', help='command line to record in the provenance')
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Trials and betas

def collect_trials(args, layout, voxel_count, voxel_index):
    """Collect ids [N], betas [N, V], session [N] and run [N] over every run of the dataset."""
    all_ids, all_betas, sessions, runs = [], [], [], []
    for session, run in layout.runs():
        if args.betas == 'record':
            record_dir = os.path.join(args.betas_dir, f'session{session:02d}_run{run:02d}')
            if not os.path.isdir(record_dir):
                raise SystemExit(f'error: {record_dir} not found; record every run with `replay --record-to` or pass --betas lss')
            ids, betas = data_io.read_recorded_betas(record_dir, voxel_count)
        else:
            ids, betas = data_io.run_lss_betas(layout, voxel_index, session, run)
        all_ids += ids
        all_betas.append(betas)
        sessions += [session] * len(ids)
        runs += [run] * len(ids)
    return np.array(all_ids), np.concatenate(all_betas), np.array(sessions), np.array(runs)


def split_trials(ids, sessions, split):
    """Boolean test mask: the simulator's split when stimuli.json has it, else the last session."""
    if split:
        return np.array([split.get(int(i), {}).get('split') == 'test' for i in ids])
    return sessions == sessions.max()


# ---------------------------------------------------------------------------------------------
# Image models

def shift_views(images, max_shift: int, generator):
    """Random translation by up to max_shift pixels (reflect padding), per image."""
    padded = F.pad(images, (max_shift,) * 4, mode='reflect')
    out = torch.empty_like(images)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + IMAGE_SIZE, dx:dx + IMAGE_SIZE]
    return out


def photometric_jitter(images, generator):
    b = len(images)
    brightness = 1 + 0.2 * (torch.rand(b, 1, 1, 1, generator=generator) - 0.5)
    contrast = 1 + 0.3 * (torch.rand(b, 1, 1, 1, generator=generator) - 0.5)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    out = (images - mean) * contrast + mean * brightness
    out = out + 0.02 * torch.randn(out.shape, generator=generator)
    return out.clamp(0, 1)


def train_autoencoder(images, steps, generator):
    model = AutoEncoder(AE_WIDTH)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        batch = images[torch.randint(0, len(images), (32,), generator=generator)]
        if torch.rand(1, generator=generator).item() < 0.5:
            batch = batch.flip(3)
        latents = model.encode(batch)
        # Small latent noise keeps the decoder smooth around the latents that the brain heads
        # and the denoiser produce, which are never exact encoder outputs.
        noisy = latents + 0.05 * latents.detach().std() * torch.randn(latents.shape, generator=generator)
        recon = model.decoder(noisy)
        loss = F.mse_loss(recon, batch) + 0.5 * F.l1_loss(recon, batch) + 1e-4 * latents.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log('autoencoder', 'step', step=step, loss=round(loss.item(), 5))
    model.eval()
    return model


def train_image_encoder(images, descriptors, steps, generator, energy_weight=10.0, temperature=0.3):
    """Train the image encoder with InfoNCE between two mildly jittered views of each crop.
    Other crops in the batch, including crops of the same photo, are negatives, so the
    embedding has to keep layout. Two linear read-outs from the embedding (not exported) keep
    low-level content in it: an 8x8 thumbnail and the standardized V1-like energy descriptor of
    data.energy_descriptor. The energy term is weighted up because the voxels of the simulated
    subject respond to that kind of statistic, so an embedding that carries it can be decoded."""
    model = ImageEncoder(ENCODER_WIDTH)
    thumbnail_readout = torch.nn.Linear(EMBED_DIM, 3 * 8 * 8)
    energy_readout = torch.nn.Linear(EMBED_DIM, descriptors.shape[1])
    params = list(model.parameters()) + list(thumbnail_readout.parameters()) + list(energy_readout.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(images), (64,), generator=generator)
        batch = images[index]
        view_a = photometric_jitter(shift_views(batch, 3, generator), generator)
        view_b = photometric_jitter(shift_views(batch, 3, generator), generator)
        za, zb = model(view_a), model(view_b)
        logits = za @ zb.T / temperature
        target = torch.arange(len(batch))
        contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

        thumbnail = F.adaptive_avg_pool2d(batch, 8).flatten(1) * 2 - 1
        thumbnail_loss = F.mse_loss(thumbnail_readout(za), thumbnail)
        energy_loss = F.mse_loss(energy_readout(za), descriptors[index])
        loss = contrastive + thumbnail_loss + energy_weight * energy_loss

        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log('image-encoder', 'step', step=step, contrastive=round(contrastive.item(), 4), thumbnail=round(thumbnail_loss.item(), 4),
                energy=round(energy_loss.item(), 4))
    model.eval()
    return model


def alphas_cumprod():
    betas = torch.linspace(BETA_START, BETA_END, TRAIN_TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0).float()


def train_denoiser(latents, conditions, steps, generator):
    """Epsilon prediction on scaled latents, condition dropped to zeros with p = CONDITION_DROP."""
    model = Denoiser(UNET_WIDTH, UNET_EMBED_WIDTH)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    abar = alphas_cumprod()
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(latents), (64,), generator=generator)
        x0, cond = latents[index], conditions[index].clone()
        drop = torch.rand(len(index), generator=generator) < CONDITION_DROP
        cond[drop] = 0
        t = torch.randint(0, TRAIN_TIMESTEPS, (len(index),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = abar[t][:, None, None, None]
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(model(noisy, t.float(), cond), noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            log('denoiser', 'step', step=step, loss=round(loss.item(), 5))
    model.eval()
    return model


@torch.no_grad()
def ddim_img2img(model, init_latents, conditions, guidance, generator, steps=DDIM_STEPS, strength=STRENGTH):
    """Reference DDIM img2img (eta 0, "leading" spacing: t = 950, 900, ..., 0 for 20 steps,
    the first int(steps * strength) kept from the end), with classifier-free guidance."""
    abar = alphas_cumprod()
    ratio = TRAIN_TIMESTEPS // steps
    timesteps = list(range(0, TRAIN_TIMESTEPS, ratio))[::-1]
    timesteps = timesteps[steps - int(steps * strength):]
    noise = torch.randn(init_latents.shape, generator=generator)
    t0 = timesteps[0]
    x = abar[t0].sqrt() * init_latents + (1 - abar[t0]).sqrt() * noise
    null = torch.zeros_like(conditions)
    for i, t in enumerate(timesteps):
        tt = torch.full((len(x),), float(t))
        eps_cond = model(x, tt, conditions)
        eps_null = model(x, tt, null)
        eps = eps_null + guidance * (eps_cond - eps_null)
        a_t = abar[t]
        a_prev = abar[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


# ---------------------------------------------------------------------------------------------
# Brain decoder

def soft_clip_loss(brain, image, temperature):
    """SoftCLIP: cross-entropy against the image-image similarity distribution, both directions."""
    logits = brain @ image.T / temperature
    targets = F.softmax(image @ image.T / temperature, dim=-1)
    forward = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    backward = -(targets * F.log_softmax(logits.T, dim=-1)).sum(-1).mean()
    return (forward + backward) / 2


def mixco_loss(brain_mixed, image, permutation, lam, temperature):
    """BiMixCo: contrastive loss of mixed voxels against the two images they were mixed from."""
    logits = brain_mixed @ image.T / temperature
    n = len(image)
    targets = torch.zeros(n, n)
    targets[torch.arange(n), torch.arange(n)] = lam
    targets[torch.arange(n), permutation] += 1 - lam
    forward = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    backward = -(targets.T * F.log_softmax(logits.T, dim=-1)).sum(-1).mean()
    return (forward + backward) / 2


def train_brain(x_train, emb_train, lat_train, hidden, epochs, generator, temperature=0.05, cosine_weight=0.0, weight_decay=0.05):
    model = BrainDecoder(x_train.shape[1], hidden)
    batch_size = 128
    steps_per_epoch = max(1, len(x_train) // batch_size)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total, pct_start=0.1)
    beta = torch.distributions.Beta(0.15, 0.15)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for s in range(steps_per_epoch):
            index = order[s * batch_size:(s + 1) * batch_size]
            x, emb, lat = x_train[index], emb_train[index], lat_train[index]
            _, brain_emb, brain_lat = model(x)
            low_level = F.mse_loss(brain_lat, lat)
            if epoch < epochs // 3:
                # MindEye trains the first third of the epochs with BiMixCo, then SoftCLIP.
                permutation = torch.randperm(len(x), generator=generator)
                lam = beta.sample().item()
                _, mixed_emb, _ = model(lam * x + (1 - lam) * x[permutation])
                contrastive = mixco_loss(mixed_emb, emb, permutation, lam, temperature)
            else:
                contrastive = soft_clip_loss(brain_emb, emb, temperature)
            cosine = (1 - (brain_emb * emb).sum(dim=-1)).mean()
            loss = contrastive + cosine_weight * cosine + low_level
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 5 == 0 or epoch == epochs - 1:
            log('brain', 'epoch', epoch=epoch, contrastive=round(contrastive.item(), 4), low_level=round(low_level.item(), 4))
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# Export

def export_onnx(module, inputs, input_names, output_names, path):
    dynamic = {name: {0: 'batch'} for name in input_names + output_names}
    torch.onnx.export(module, inputs, path, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic, opset_version=ONNX_OPSET, do_constant_folding=True)
    import onnx
    onnx.checker.check_model(onnx.load(path))


def choose_hidden(voxel_count: int) -> int:
    """Widest backbone (256 down to 64) whose backbone and heads together stay under
    BRAIN_PARAMETER_BUDGET parameters, so the model directory fits its 4 MB budget."""
    for hidden in (256, 192, 160, 128, 96, 80):
        if count_parameters(BrainDecoder(voxel_count, hidden)) <= BRAIN_PARAMETER_BUDGET:
            return hidden
    return 64


def to_uint8_images(tensor):
    return (tensor.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    sizes = SIZES['quick' if args.quick else 'full']
    if args.niceness > 0:
        os.nice(args.niceness)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.betas == 'record' and not args.betas_dir:
        raise SystemExit('error: --betas record needs --betas-dir; pass the folder of `replay --record-to` outputs or --betas lss')
    out_dir = os.path.abspath(args.out)
    work_dir = os.path.abspath(args.work or os.path.join(tempfile.gettempdir(), 'mindeye-rt-train-demo'))
    os.makedirs(work_dir, exist_ok=True)

    data_io.list_photos(args.photos)  # fails early when the photo folder is empty
    layout = data_io.NsdLayout(args.data)
    split = layout.read_split()
    if args.images_only:
        train_image_models(args, split, sizes, generator, rng, work_dir)
        return

    # Dataset, mask and trials.
    roi_image, voxel_index = layout.read_mask()
    voxel_count = len(voxel_index)
    if voxel_count == 0:
        raise SystemExit(f'error: {layout.roi} has no voxel with value 1 (nsdgeneral); check the dataset')
    ids, betas, sessions, runs = collect_trials(args, layout, voxel_count, voxel_index)
    np.savez(os.path.join(work_dir, 'trials.npz'), ids=ids, betas=betas, sessions=sessions, runs=runs)
    is_test = split_trials(ids, sessions, split)
    if is_test.all() or not is_test.any():
        raise SystemExit(f'error: {args.data} needs both training and test trials (found {int((~is_test).sum())} training, {int(is_test.sum())} test)')
    log('data', 'trials', voxels=voxel_count, train=int((~is_test).sum()), test=int(is_test.sum()),
        runs=len(layout.runs()), distinct_test_images=len(set(ids[is_test].tolist())))

    # Stimulus images: 425x425 for the metrics, 64x64 for the networks.
    distinct_ids = sorted(set(ids.tolist()))
    stimuli_425 = layout.read_stimuli(distinct_ids)
    stimuli_64 = data_io.resize_images(stimuli_425, IMAGE_SIZE)
    row_of_id = {image_id: k for k, image_id in enumerate(distinct_ids)}

    if args.image_models:
        state = torch.load(args.image_models)
        autoencoder, encoder, denoiser = AutoEncoder(AE_WIDTH), ImageEncoder(ENCODER_WIDTH), Denoiser(UNET_WIDTH, UNET_EMBED_WIDTH)
        autoencoder.load_state_dict(state['autoencoder'])
        encoder.load_state_dict(state['encoder'])
        denoiser.load_state_dict(state['denoiser'])
        latent_scale = state['latent_scale']
        for m in (autoencoder, encoder, denoiser):
            m.eval()
        if sorted(state.get('held_out_photos', [])) != sorted(held_out_photos(split)):
            raise SystemExit(f'error: {args.image_models} was trained with held-out photos {state.get("held_out_photos")}, '
                             f'but this dataset holds out {held_out_photos(split)}; train the image models again')
        log('images', 'reused image models', file=args.image_models)
    else:
        autoencoder, encoder, denoiser, latent_scale = train_image_models(args, split, sizes, generator, rng, work_dir)

    # Brain decoder targets: image embeddings and scaled latents of each trial's stimulus.
    stimuli_tensor = data_io.to_tensor_images(stimuli_64)
    with torch.no_grad():
        stimulus_embeddings = torch.cat([encoder(c) for c in stimuli_tensor.split(256)])
        stimulus_latents = torch.cat([autoencoder.encode(c) for c in stimuli_tensor.split(256)]) * latent_scale
    rows = np.array([row_of_id[i] for i in ids])
    mean = betas[~is_test].mean(axis=0).astype(np.float32)
    std = np.maximum(betas[~is_test].std(axis=0), 1e-6).astype(np.float32)
    z = torch.from_numpy((betas - mean) / std).float()
    hidden = args.hidden or choose_hidden(voxel_count)
    train_index = torch.from_numpy(np.flatnonzero(~is_test))
    brain = train_brain(z[train_index], stimulus_embeddings[rows[~is_test]], stimulus_latents[rows[~is_test]], hidden,
                        sizes['brain_epochs'], generator)

    evaluation = evaluate(args, brain, autoencoder, denoiser, encoder, latent_scale, z, ids, is_test, rows,
                          stimuli_425, stimulus_embeddings, distinct_ids, sizes, work_dir, generator)
    evaluation['trainSeconds'] = round(time.time() - started, 1)
    log('evaluate', 'done', **evaluation)

    write_model_dir(args, out_dir, roi_image, voxel_count, hidden, mean, std, brain, autoencoder, encoder, denoiser,
                    latent_scale, ids, is_test, distinct_ids, stimuli_425, stimulus_embeddings, evaluation)
    log('export', 'model directory written', out=out_dir, seconds=round(time.time() - started, 1))


def train_stage(work_dir, name, fresh_model, test_photos, seed, quick, train):
    """Run one image-model stage, or load it from WORK/<name>.pt when an earlier run with the
    same seed, size and held-out photos finished it, so that an interrupted training resumes."""
    path = os.path.join(work_dir, f'{name}.pt')
    if os.path.exists(path):
        state = torch.load(path)
        if state['seed'] == seed and state.get('quick', False) == quick and state['held_out_photos'] == test_photos:
            fresh_model.load_state_dict(state['model'])
            fresh_model.eval()
            log(name, 'loaded from an earlier run', file=path)
            return fresh_model
    model = train()
    torch.save({'model': model.state_dict(), 'seed': seed, 'quick': quick, 'held_out_photos': test_photos}, path)
    return model


def held_out_photos(split: dict) -> list:
    return sorted({v['photo'] for v in split.values() if v.get('split') == 'test' and v.get('photo')})


def train_image_models(args, split, sizes, generator, rng, work_dir):
    """Train the autoencoder, image encoder and denoiser on random crops of the training
    photographs only, so that nothing of the test photographs leaks in."""
    photo_names = data_io.list_photos(args.photos)
    test_photos = held_out_photos(split)
    if not test_photos:
        log('images', 'no photo split in the dataset; the image models train on all photographs')
    train_photos = [n for n in photo_names if n not in test_photos]
    crops = data_io.random_crops(args.photos, train_photos, sizes['crops'], rng)
    image_train = data_io.to_tensor_images(crops)
    descriptors = data_io.energy_descriptor(crops)
    descriptors = torch.from_numpy((descriptors - descriptors.mean(axis=0)) / (descriptors.std(axis=0) + 1e-6))
    log('images', 'image-model training set', images=len(image_train), photos=len(train_photos), held_out_photos=test_photos)

    autoencoder = train_stage(work_dir, 'autoencoder', AutoEncoder(AE_WIDTH), test_photos, args.seed, args.quick,
                              lambda: train_autoencoder(image_train, sizes['ae_steps'], generator))
    encoder = train_stage(work_dir, 'image_encoder', ImageEncoder(ENCODER_WIDTH), test_photos, args.seed, args.quick,
                          lambda: train_image_encoder(image_train, descriptors, sizes['encoder_steps'], generator))
    with torch.no_grad():
        train_latents = torch.cat([autoencoder.encode(chunk) for chunk in image_train.split(256)])
        train_embeddings = torch.cat([encoder(chunk) for chunk in image_train.split(256)])
    # As Stable Diffusion's 0.18215: the scale that gives the latents unit variance.
    latent_scale = float(1.0 / train_latents.std())
    denoiser = train_stage(work_dir, 'denoiser', Denoiser(UNET_WIDTH, UNET_EMBED_WIDTH), test_photos, args.seed, args.quick,
                           lambda: train_denoiser(train_latents * latent_scale, train_embeddings, sizes['unet_steps'], generator))
    path = os.path.join(work_dir, 'image_models.pt')
    torch.save({'autoencoder': autoencoder.state_dict(), 'encoder': encoder.state_dict(), 'denoiser': denoiser.state_dict(),
                'latent_scale': latent_scale, 'held_out_photos': test_photos, 'seed': args.seed}, path)
    log('images', 'image models saved', file=path)
    return autoencoder, encoder, denoiser, latent_scale


@torch.no_grad()
def evaluate(args, brain, autoencoder, denoiser, encoder, latent_scale, z, ids, is_test, rows, stimuli_425,
             stimulus_embeddings, distinct_ids, sizes, work_dir, generator):
    """Single-trial metrics on the held-out test trials (no repeat averaging)."""
    test_index = np.flatnonzero(is_test)
    metric_trials = np.arange(min(sizes['eval_trials'], len(test_index)))
    test_ids = sorted(set(ids[test_index].tolist()))
    bank_rows = np.array([distinct_ids.index(i) for i in test_ids])
    bank = stimulus_embeddings[bank_rows].numpy()
    truth = np.array([test_ids.index(i) for i in ids[test_index]])
    _, brain_emb, brain_lat = brain(z[torch.from_numpy(test_index)])
    brain_emb_np = brain_emb.numpy()
    result = {
        'testTrials': int(len(test_index)),
        'candidates': int(len(test_ids)),
        'retrievalTop1': round(metrics.retrieval_top1(brain_emb_np, bank, truth), 4),
        'retrievalChance': round(1.0 / len(test_ids), 4),
        'twoWayAccuracy': round(metrics.two_way(brain_emb_np, bank, truth), 4),
    }
    # Brain retrieval: for each test image, which of its trials' embeddings is closest (one trial per image).
    first_trial = np.array([np.flatnonzero(ids[test_index] == i)[0] for i in test_ids])
    result['brainRetrievalTop1'] = round(metrics.retrieval_top1(bank, brain_emb_np[first_trial], np.arange(len(test_ids))), 4)

    low_images = to_uint8_images(autoencoder.decoder(brain_lat / latent_scale))
    truth_images = stimuli_425[rows[test_index]]
    pairs = [(low_images[k], truth_images[k]) for k in metric_trials]
    result['lowLevelTrials'] = int(len(metric_trials))
    result['pixCorrLowLevel'] = round(float(np.mean([metrics.pix_corr(a, b) for a, b in pairs])), 4)
    result['ssimLowLevel'] = round(float(np.mean([metrics.ssim(a, b) for a, b in pairs])), 4)

    # Autoencoder ceiling: the ground-truth image through the autoencoder.
    truth_64 = data_io.to_tensor_images(data_io.resize_images(truth_images[metric_trials], IMAGE_SIZE))
    ceiling = to_uint8_images(autoencoder(truth_64))
    result['pixCorrAutoencoderCeiling'] = round(float(np.mean([metrics.pix_corr(a, b) for a, b in zip(ceiling, truth_images[metric_trials])])), 4)
    result['ssimAutoencoderCeiling'] = round(float(np.mean([metrics.ssim(a, b) for a, b in zip(ceiling, truth_images[metric_trials])])), 4)

    # img2img on a subset of test trials for several guidance scales. The best one goes into the manifest.
    subset = np.arange(min(sizes['eval_img2img'], len(test_index)))
    best = None
    for guidance in (1.0, 3.0, 5.0):
        final = ddim_img2img(denoiser, brain_lat[subset], brain_emb[subset], guidance, torch.Generator().manual_seed(args.seed))
        final_images = to_uint8_images(autoencoder.decoder(final / latent_scale))
        with torch.no_grad():
            final_emb = encoder(data_io.to_tensor_images(final_images)).numpy()
        scores = {
            'guidance': guidance,
            'pixCorr': round(float(np.mean([metrics.pix_corr(a, b) for a, b in zip(final_images, truth_images[subset])])), 4),
            'ssim': round(float(np.mean([metrics.ssim(a, b) for a, b in zip(final_images, truth_images[subset])])), 4),
            # Top-1 of the final image's own embedding among the bank, which measures whether it looks like its stimulus.
            'finalImageRetrievalTop1': round(metrics.retrieval_top1(final_emb, bank, truth[subset]), 4),
        }
        log('evaluate', 'img2img', **scores)
        if best is None or scores['finalImageRetrievalTop1'] + scores['ssim'] > best['finalImageRetrievalTop1'] + best['ssim']:
            best, best_images = scores, final_images
    result['img2img'] = {**best, 'trials': int(len(subset)), 'steps': DDIM_STEPS, 'strength': STRENGTH}

    # A contact sheet (truth, low-level, img2img) for the docs and for eyeballing.
    sheet_rows = []
    for k in subset[:8]:
        pair = [data_io.resize_images(truth_images[k:k + 1], IMAGE_SIZE)[0], low_images[k], best_images[k]]
        sheet_rows.append(np.concatenate(pair, axis=1))
    from PIL import Image
    Image.fromarray(np.concatenate(sheet_rows, axis=0)).save(os.path.join(work_dir, 'test_examples.png'))
    return result


def write_model_dir(args, out_dir, roi_image, voxel_count, hidden, mean, std, brain, autoencoder, encoder, denoiser,
                    latent_scale, ids, is_test, distinct_ids, stimuli_425, stimulus_embeddings, evaluation):
    import nibabel as nib
    from PIL import Image
    # Everything is written to a sibling folder first, so a failed export leaves an existing
    # model directory as it was.
    final_dir, out_dir = out_dir, out_dir.rstrip('/') + '.partial'
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(os.path.join(out_dir, 'thumbs'))
    brain.eval()
    latent = torch.zeros(2, hidden)
    export_onnx(brain.backbone, (torch.zeros(2, voxel_count),), ['voxels'], ['latent'], os.path.join(out_dir, 'backbone.onnx'))
    export_onnx(brain.retrieval, (latent,), ['latent'], ['embedding'], os.path.join(out_dir, 'retrieval.onnx'))
    export_onnx(brain.low_level, (latent,), ['latent'], ['latents'], os.path.join(out_dir, 'low_level.onnx'))
    export_onnx(ScaledDecoder(autoencoder.decoder), (torch.zeros(2, *LATENT_SHAPE),), ['latents'], ['image'],
                os.path.join(out_dir, 'vae_decoder.onnx'))
    export_onnx(encoder, (torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE),), ['image'], ['embedding'],
                os.path.join(out_dir, 'image_encoder.onnx'))
    export_onnx(denoiser, (torch.zeros(2, *LATENT_SHAPE), torch.zeros(2), torch.zeros(2, EMBED_DIM)),
                ['noisy_latents', 'timestep', 'condition'], ['epsilon'], os.path.join(out_dir, 'unet.onnx'))

    mask = (np.asarray(roi_image.dataobj) == 1).astype(np.uint8)
    mask_image = nib.Nifti1Image(mask, roi_image.affine)
    mask_image.set_qform(roi_image.affine, code=1)
    mask_image.set_sform(roi_image.affine, code=1)
    nib.save(mask_image, os.path.join(out_dir, 'mask.nii.gz'))
    mean.astype('<f4').tofile(os.path.join(out_dir, 'norm_mean.f32'))
    std.astype('<f4').tofile(os.path.join(out_dir, 'norm_std.f32'))

    test_ids = sorted(set(ids[is_test].tolist()))
    bank_rows = [distinct_ids.index(i) for i in test_ids]
    stimulus_embeddings[bank_rows].numpy().astype('<f4').tofile(os.path.join(out_dir, 'bank.f32'))
    with open(os.path.join(out_dir, 'bank_ids.json'), 'w') as f:
        json.dump([str(i) for i in test_ids], f)
    for image_id, row in zip(test_ids, bank_rows):
        thumb = Image.fromarray(stimuli_425[row]).resize((64, 64), Image.BICUBIC, reducing_gap=3.0)
        thumb.save(os.path.join(out_dir, 'thumbs', f'{image_id}.jpg'), quality=85)

    sim_info = {}
    sim_info_path = os.path.join(args.data, 'mindeye-rt.json')
    if os.path.exists(sim_info_path):
        with open(sim_info_path) as f:
            sim_info = json.load(f)
    manifest = {
        'format': 'mindeye-rt-model',
        'version': 1,
        'name': 'demo' + ('-quick' if args.quick else ''),
        'subject': 'simulated subj01',
        'simulated': True,
        'provenance': {
            'tool': 'tools/demo/train_demo.py',
            'command': args.command or ' '.join(sys.argv),
            'seed': args.seed,
            'quick': args.quick,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            # The simulate options of the training data: the demo (src/demo/prepare.ts) simulates
            # its test run with the same ones, so that it replays the subject this model decodes.
            'simulate': {k: sim_info[k] for k in ('seed', 'sessions', 'runsPerSession', 'testRuns', 'grid') if k in sim_info},
            'data': {'simulation': sim_info, 'betas': args.betas, 'trainTrials': int((~is_test).sum()),
                     'testTrials': int(is_test.sum())},
            'framework': f'torch {torch.__version__} (CPU), ONNX opset {ONNX_OPSET}',
            'evaluation': evaluation,
        },
        'voxels': {'count': int(voxel_count), 'mask': 'mask.nii.gz', 'maskRule': 'value == 1'},
        'normalization': {'kind': 'calibration', 'mean': 'norm_mean.f32', 'std': 'norm_std.f32'},
        'hrf': {'kind': 'canonical'},
        'heads': {
            'backbone': {'file': 'backbone.onnx', 'input': 'voxels', 'inputName': 'voxels', 'outputName': 'latent',
                         'dim': hidden, 'parameters': count_parameters(brain.backbone)},
            'retrieval': {'file': 'retrieval.onnx', 'input': 'backbone', 'inputName': 'latent', 'outputName': 'embedding',
                          'dim': EMBED_DIM, 'space': 'demo-encoder', 'normalized': True,
                          'parameters': count_parameters(brain.retrieval)},
            'lowLevel': {'file': 'low_level.onnx', 'input': 'backbone', 'inputName': 'latent', 'outputName': 'latents',
                         'latentShape': list(LATENT_SHAPE), 'parameters': count_parameters(brain.low_level)},
            'vaeDecoder': {'file': 'vae_decoder.onnx', 'input': 'lowLevel', 'inputName': 'latents', 'outputName': 'image',
                           'scale': latent_scale, 'imageSize': [IMAGE_SIZE, IMAGE_SIZE], 'outputRange': [0, 1],
                           'parameters': count_parameters(autoencoder.decoder)},
            'unet': {'file': 'unet.onnx', 'input': 'lowLevel', 'inputName': 'noisy_latents', 'timestepName': 'timestep',
                     'timestepType': 'float32', 'conditionName': 'condition', 'conditionInput': 'retrieval',
                     'nullCondition': 'zeros', 'outputName': 'epsilon', 'prediction': 'epsilon',
                     'scheduler': 'ddim', 'timestepSpacing': 'leading', 'stepsOffset': 0, 'setAlphaToOne': True,
                     'steps': DDIM_STEPS, 'strength': STRENGTH, 'guidance': evaluation['img2img']['guidance'],
                     'trainTimesteps': TRAIN_TIMESTEPS, 'betaSchedule': 'linear', 'betaStart': BETA_START, 'betaEnd': BETA_END,
                     'condDim': EMBED_DIM, 'latentShape': list(LATENT_SHAPE), 'parameters': count_parameters(denoiser)},
            'imageEncoder': {'file': 'image_encoder.onnx', 'input': 'vaeDecoder', 'inputName': 'image', 'outputName': 'embedding',
                             'inputSize': IMAGE_SIZE, 'inputRange': [0, 1], 'dim': EMBED_DIM, 'normalized': True,
                             'parameters': count_parameters(encoder)},
        },
        'imageBank': {'ids': 'bank_ids.json', 'embeddings': 'bank.f32', 'dim': EMBED_DIM, 'thumbnails': 'thumbs/',
                      'space': 'demo-encoder', 'count': len(test_ids)},
    }
    with open(os.path.join(out_dir, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=2)
        f.write('\n')
    if os.path.isdir(final_dir):
        shutil.rmtree(final_dir)
    os.rename(out_dir, final_dir)


if __name__ == '__main__':
    main()
