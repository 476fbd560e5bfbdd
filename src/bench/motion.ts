/**
 * Motion-correction benchmark for `mindeye-rt bench`.
 *
 * 1. NSD grid (81x104x83, 1.8 mm): a real EPI volume (data/epi/siemens-ep2d-asc, volume 3)
 *    upsampled onto the NSD grid is the reference. Each timed volume is the reference moved
 *    along a random walk (0.05 mm and 0.05 degree steps, one 2 mm / 2 degree jump half way) with
 *    Gaussian noise of 2% of the mean brain signal. Per volume we time `register` plus
 *    `sampleAt` on `maskVoxels` voxels, then the QualityMonitor update on those values, and
 *    report the errors against the applied motion. The
 *    moving volumes are made with this project's trilinear resampler; the tests check accuracy
 *    with an independent cubic resampler.
 * 2. Real EPI side by side with nipy (tools/nipy_motion.py, Debian's python3-nipy, the
 *    registration pyneal uses). Both register the Siemens series volumes 2-5 to volume 2, and
 *    volume 3 moved by three known transforms (Catmull-Rom cubic interpolation) to volume 3.
 *    Reports time per volume and accuracy of both, and how far their estimates are apart.
 *    Skipped with the reason when nipy is missing.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MotionParams, Shape3 } from '../events.ts';
import { readNifti, writeNifti } from '../io/nifti.ts';
import { MotionCorrector, intensityMask } from '../preprocess/motion.ts';
import { QualityMonitor } from '../preprocess/quality.ts';
import { resampleTrilinear } from '../preprocess/resample.ts';
import { framewiseDisplacement, gridCentreMm, invertAffine, invertRigid, motionToMatrix, multiply4 } from '../preprocess/rigid.ts';

const EPI_FILE = new URL('../../data/epi/siemens-ep2d-asc/2_ep2d_Asc.nii.gz', import.meta.url).pathname;
const NIPY_TOOL = new URL('../../tools/nipy_motion.py', import.meta.url).pathname;
const NSD_SHAPE: Shape3 = [81, 104, 83];
const NSD_VOXEL_MM = 1.8;

export interface MotionBenchOptions {
  /** Timed NSD-grid volumes (default 40, after 5 untimed warm-up volumes). */
  volumes?: number;
  /** Mask voxels read with sampleAt per volume (default 15000, about an NSD nsdgeneral ROI). */
  maskVoxels?: number;
  /** Run the nipy comparison (default true; it takes about a minute on 2 cores). */
  nipy?: boolean;
  seed?: number;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function summary(values: number[]): { p50: number; p95: number; max: number } {
  return { p50: round(percentile(values, 50)), p95: round(percentile(values, 95)), max: round(Math.max(...values)) };
}

/** Deterministic normal random numbers (Park-Miller generator, Box-Muller transform). */
function normalRandom(seed: number): () => number {
  let state = seed % 2147483647 || 1;
  const uniform = (): number => {
    state = (state * 16807) % 2147483647;
    return state / 2147483647;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** Moves `volume` by `motion` (about the grid centre) with trilinear interpolation. */
function moveVolume(volume: Float32Array, shape: Shape3, affine: Float64Array, motion: MotionParams): Float32Array {
  // Output voxel y takes the input at H^-1(y): voxToVox = A^-1 H^-1 A.
  const inverseAffine = invertAffine(affine) as Float64Array;
  const h = motionToMatrix(motion, gridCentreMm(shape, affine));
  const voxToVox = multiply4(inverseAffine, multiply4(invertRigid(h), affine));
  return resampleTrilinear(volume, shape, voxToVox, shape);
}

/** Catmull-Rom weight of a sample at distance t. */
function catmullRom(t: number): number {
  const x = Math.abs(t);
  if (x < 1) return 1.5 * x * x * x - 2.5 * x * x + 1;
  if (x < 2) return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
  return 0;
}

/**
 * Moves `volume` by `motion` with Catmull-Rom cubic interpolation (0 outside the grid). Sharper
 * than trilinear, so the known-transform volumes are not blurred by the move itself.
 */
function moveVolumeCubic(volume: Float32Array, shape: Shape3, affine: Float64Array, motion: MotionParams): Float32Array {
  const inverseAffine = invertAffine(affine) as Float64Array;
  const h = motionToMatrix(motion, gridCentreMm(shape, affine));
  const m = multiply4(inverseAffine, multiply4(invertRigid(h), affine));
  const [nx, ny, nz] = shape;
  const out = new Float32Array(volume.length);
  const clamp = (i: number, n: number): number => Math.min(n - 1, Math.max(0, i));
  for (let k = 0, o = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++, o++) {
        const u = m[0] * i + m[1] * j + m[2] * k + m[3];
        const v = m[4] * i + m[5] * j + m[6] * k + m[7];
        const w = m[8] * i + m[9] * j + m[10] * k + m[11];
        if (u < -0.5 || v < -0.5 || w < -0.5 || u > nx - 0.5 || v > ny - 0.5 || w > nz - 0.5) continue;
        const u0 = Math.floor(u), v0 = Math.floor(v), w0 = Math.floor(w);
        let sum = 0;
        for (let c = -1; c <= 2; c++) {
          const wz = catmullRom(w - (w0 + c));
          const z = clamp(w0 + c, nz);
          for (let b = -1; b <= 2; b++) {
            const wy = catmullRom(v - (v0 + b)) * wz;
            const y = clamp(v0 + b, ny);
            for (let a = -1; a <= 2; a++) sum += volume[clamp(u0 + a, nx) + nx * (y + ny * z)] * catmullRom(u - (u0 + a)) * wy;
          }
        }
        out[o] = sum;
      }
    }
  }
  return out;
}

function errorOf(estimate: MotionParams, truth: MotionParams): { mm: number; deg: number } {
  let mm = 0, deg = 0;
  for (let a = 0; a < 3; a++) {
    mm = Math.max(mm, Math.abs(estimate.translationMm[a] - truth.translationMm[a]));
    deg = Math.max(deg, (Math.abs(estimate.rotationRad[a] - truth.rotationRad[a]) * 180) / Math.PI);
  }
  return { mm, deg };
}

function motionOf(tx: number, ty: number, tz: number, rxDeg: number, ryDeg: number, rzDeg: number): MotionParams {
  const rad = Math.PI / 180;
  return { translationMm: [tx, ty, tz], rotationRad: [rxDeg * rad, ryDeg * rad, rzDeg * rad] };
}

function benchNsdGrid(volumes: number, maskVoxels: number, seed: number): Record<string, unknown> {
  const epi = readNifti(EPI_FILE);
  const epiShape = epi.header.shape;
  const n = epiShape[0] * epiShape[1] * epiShape[2];
  const epiVolume = epi.data.slice(3 * n, 4 * n);

  // NSD-like grid: 1.8 mm LAS voxels whose centre coincides with the EPI grid's centre.
  const centre = gridCentreMm(epiShape, epi.header.affine);
  const affine = Float64Array.of(
    -NSD_VOXEL_MM, 0, 0, centre[0] + (NSD_VOXEL_MM * (NSD_SHAPE[0] - 1)) / 2,
    0, NSD_VOXEL_MM, 0, centre[1] - (NSD_VOXEL_MM * (NSD_SHAPE[1] - 1)) / 2,
    0, 0, NSD_VOXEL_MM, centre[2] - (NSD_VOXEL_MM * (NSD_SHAPE[2] - 1)) / 2,
    0, 0, 0, 1,
  );
  const toEpi = multiply4(invertAffine(epi.header.affine) as Float64Array, affine);
  const reference = resampleTrilinear(epiVolume, epiShape, toEpi, NSD_SHAPE);

  const mask = intensityMask(reference);
  const brain: number[] = [];
  let brainSum = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i]) { brain.push(i); brainSum += reference[i]; }
  const noiseSd = (0.02 * brainSum) / brain.length;
  const stride = Math.max(1, Math.floor(brain.length / maskVoxels));
  const indices = Int32Array.from(brain.filter((_, k) => k % stride === 0).slice(0, maskVoxels));

  const constructStart = performance.now();
  const corrector = new MotionCorrector({ shape: NSD_SHAPE, affine, reference, referenceSource: 'NSD-grid benchmark reference' });
  const constructorMs = performance.now() - constructStart;
  const random = normalRandom(seed);
  const truth = motionOf(0, 0, 0, 0, 0, 0);
  const totalMs: number[] = [], registerMs: number[] = [], sampleMs: number[] = [], cpuMs: number[] = [];
  let iterations = 0, maxMm = 0, maxDeg = 0, jumps = 0;
  const warmup = 5;
  const out = new Float32Array(indices.length);
  const quality = new QualityMonitor({ shape: NSD_SHAPE, indices });
  const qualityMs: number[] = [];
  const qualityFlags: Record<string, number> = {};
  for (let v = 0; v < warmup + volumes; v++) {
    for (let a = 0; a < 3; a++) {
      truth.translationMm[a] += 0.05 * random();
      truth.rotationRad[a] += ((0.05 * Math.PI) / 180) * random();
    }
    if (v === warmup + Math.floor(volumes / 2)) {
      truth.translationMm[2] += 2;
      truth.rotationRad[0] += (2 * Math.PI) / 180;
    }
    const moved = moveVolume(reference, NSD_SHAPE, affine, truth);
    for (let i = 0; i < moved.length; i++) if (moved[i] !== 0) moved[i] += noiseSd * random();

    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const result = corrector.register(moved);
    const t1 = performance.now();
    corrector.sampleAt(moved, indices, out);
    const t2 = performance.now();
    const cpu = process.cpuUsage(cpu0);
    const q = quality.update(out, result.motion, result.flags);
    const t3 = performance.now();
    if (v < warmup) continue;
    qualityMs.push(t3 - t2);
    for (const flag of q.flags) qualityFlags[flag] = (qualityFlags[flag] ?? 0) + 1;
    cpuMs.push((cpu.user + cpu.system) / 1000);
    registerMs.push(t1 - t0);
    sampleMs.push(t2 - t1);
    totalMs.push(t2 - t0);
    iterations += result.iterations;
    if (result.flags.includes('jump')) jumps++;
    const error = errorOf(result.motion, truth);
    maxMm = Math.max(maxMm, error.mm);
    maxDeg = Math.max(maxDeg, error.deg);
  }
  return {
    shape: NSD_SHAPE,
    voxelMm: NSD_VOXEL_MM,
    volumes,
    maskVoxels: indices.length,
    // Building the reference pyramid, once per run (the first volume waits for it).
    constructorMs: round(constructorMs),
    registerAndSampleMs: summary(totalMs),
    // CPU time of this process for the same work: close to the wall time on an idle machine,
    // and a fairer figure when other processes share the cores (see loadAverage).
    registerAndSampleCpuMs: summary(cpuMs),
    loadAverage: round(loadavg()[0], 2),
    cores: availableParallelism(),
    registerMs: summary(registerMs),
    sampleMs: summary(sampleMs),
    qualityUpdateMs: summary(qualityMs),
    // Volumes per flag; the walk's steps give FD near 0.2 mm, the jump one 'jump' and 'fd'.
    qualityFlagCounts: qualityFlags,
    iterationsMean: round(iterations / volumes, 1),
    maxErrorMm: round(maxMm),
    maxErrorDeg: round(maxDeg),
    jumpFlags: jumps,
  };
}

function benchAgainstNipy(): Record<string, unknown> {
  const epi = readNifti(EPI_FILE);
  const shape = epi.header.shape;
  const affine = epi.header.affine;
  const n = shape[0] * shape[1] * shape[2];
  const volume = (index: number): Float32Array => epi.data.slice(index * n, (index + 1) * n);

  // Series file: real volumes 2-5 (registered to volume 2), then volume 3 and three copies of
  // it moved by known transforms (registered to that volume 3, so the truth is the transform).
  const realIndices = [2, 3, 4, 5];
  const known = [motionOf(0.6, -0.4, 0.9, 0.5, -0.4, 0.8), motionOf(1.5, -1.0, 0.6, -1.2, 0.9, 1.4), motionOf(-0.8, 1.2, -1.1, 1.0, 0.7, -0.9)];
  const base = volume(3);
  const series = [...realIndices.map(volume), base, ...known.map((m) => moveVolumeCubic(base, shape, affine, m))];
  const work = mkdtempSync(join(tmpdir(), 'mindeye-bench-motion-'));
  try {
    const seriesFile = join(work, 'series.nii');
    const all = new Float32Array(series.length * n);
    series.forEach((v, i) => all.set(v, i * n));
    writeNifti(seriesFile, all, { shape, volumes: series.length, voxelSizeMm: epi.header.voxelSizeMm, affine, datatype: 'float32' });

    // Ours: the real volumes against volume 2, then the moved ones against volume 3.
    const ours: MotionParams[] = [];
    const oursMs: number[] = [];
    const realCorrector = new MotionCorrector({ shape, affine, reference: volume(2) });
    for (let i = 0; i < realIndices.length; i++) {
      const t0 = performance.now();
      ours.push(realCorrector.register(series[i].slice()).motion);
      oursMs.push(performance.now() - t0);
    }
    const knownCorrector = new MotionCorrector({ shape, affine, reference: base });
    const oursKnown: MotionParams[] = [];
    for (let i = 0; i < known.length; i++) {
      const t0 = performance.now();
      oursKnown.push(knownCorrector.register(series[realIndices.length + 1 + i].slice()).motion);
      oursMs.push(performance.now() - t0);
    }

    const runNipy = (referenceVolume: number, volumes: number[]): { params: MotionParams[]; seconds: number[] } | string => {
      const outFile = join(work, `nipy-${referenceVolume}.json`);
      const result = spawnSync('/usr/bin/python3', [NIPY_TOOL, seriesFile, '--reference-volume', String(referenceVolume), '--volumes', volumes.join(','), '--out', outFile], { encoding: 'utf8' });
      if (result.error !== undefined) return `could not run /usr/bin/python3: ${result.error.message}`;
      if (result.status === 3) return 'python3-nipy is not installed (apt-get install python3-nipy)';
      if (result.status !== 0) return `tools/nipy_motion.py failed with status ${result.status}: ${result.stderr.slice(-300)}`;
      const parsed = JSON.parse(readFileSync(outFile, 'utf8')) as { volumes: Array<MotionParams & { seconds: number }> };
      return { params: parsed.volumes, seconds: parsed.volumes.map((v) => v.seconds) };
    };
    const nipyReal = runNipy(0, [0, 1, 2, 3]);
    const nipyKnown = typeof nipyReal === 'string' ? nipyReal : runNipy(4, [5, 6, 7]);

    const oursErrors = oursKnown.map((m, i) => errorOf(m, known[i]));
    const report: Record<string, unknown> = {
      series: 'data/epi/siemens-ep2d-asc volumes 2-5 against volume 2, and volume 3 moved by 3 known transforms',
      ours: {
        msPerVolume: summary(oursMs),
        knownMaxErrorMm: round(Math.max(...oursErrors.map((e) => e.mm))),
        knownMaxErrorDeg: round(Math.max(...oursErrors.map((e) => e.deg))),
      },
    };
    if (typeof nipyReal === 'string' || typeof nipyKnown === 'string') {
      report.nipy = { skipped: typeof nipyReal === 'string' ? nipyReal : nipyKnown };
      return report;
    }
    const nipyErrors = nipyKnown.params.map((m, i) => errorOf(m, known[i]));
    const seconds = [...nipyReal.seconds, ...nipyKnown.seconds];
    report.nipy = {
      msPerVolume: summary(seconds.map((s) => s * 1000)),
      knownMaxErrorMm: round(Math.max(...nipyErrors.map((e) => e.mm))),
      knownMaxErrorDeg: round(Math.max(...nipyErrors.map((e) => e.deg))),
    };
    let maxMm = 0, maxDeg = 0, maxFd = 0;
    for (let i = 0; i < realIndices.length; i++) {
      const d = errorOf(ours[i], nipyReal.params[i]);
      maxMm = Math.max(maxMm, d.mm);
      maxDeg = Math.max(maxDeg, d.deg);
      // Framewise displacement between consecutive volumes, leaving out the step from the
      // reference, where both estimates are exactly identity and the constant offset between
      // the two cost functions' optima would count in full.
      if (i > 1) {
        const fdOurs = framewiseDisplacement(ours[i - 1], ours[i]);
        const fdNipy = framewiseDisplacement(nipyReal.params[i - 1], nipyReal.params[i]);
        maxFd = Math.max(maxFd, Math.abs(fdOurs - fdNipy));
      }
    }
    report.agreementOnRealVolumes = { maxTranslationDiffMm: round(maxMm), maxRotationDiffDeg: round(maxDeg), maxFdDiffMmAfterReference: round(maxFd) };
    report.speedup = round(percentile(seconds.map((s) => s * 1000), 50) / percentile(oursMs, 50), 0);
    return report;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export async function benchMotion(opts: MotionBenchOptions = {}): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = {
    nsdGrid: benchNsdGrid(opts.volumes ?? 40, opts.maskVoxels ?? 15000, opts.seed ?? 1),
  };
  if (opts.nipy ?? true) result.epiVersusNipy = benchAgainstNipy();
  return result;
}
