/**
 * The embedded demo: a held-out run of the simulated subject that the shipped demo model
 * (models/demo) was trained on, generated on first use into .cache/demo/ and replayed through
 * the NSD source with motion correction on.
 *
 * The simulation parameters come from the model manifest's `provenance.simulate`
 * ({ seed, sessions, runsPerSession, testRuns, grid }), so the demo run has the same ROI,
 * voxel model and test images as the model's training data and image bank.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MindeyeError } from '../errors.ts';
import { nsdSource } from '../ingest/nsd.ts';
import type { Source } from '../ingest/source.ts';
import { logger } from '../log.ts';
import type { ModelManifest } from '../decode/manifest.ts';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DEMO_MODEL_DIR = join(REPO_ROOT, 'models/demo');

export interface DemoSimulation {
  seed: number;
  sessions: number;
  runsPerSession: number;
  testRuns: number;
  grid: 'epi' | 'nsd';
}

export interface PreparedDemo {
  source: Source;
  modelDir: string;
  datasetRoot: string;
  stimuliFile: string;
  session: number;
  run: number;
}

export function demoSimulation(modelDir = DEMO_MODEL_DIR): DemoSimulation {
  const manifestPath = join(modelDir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'The demo model is missing.', {
      file: manifestPath, fix: 'restore models/demo from git, or retrain it with `mindeye-rt train-demo`',
    });
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as ModelManifest;
  const sim = (manifest.provenance?.simulate ?? {}) as Partial<DemoSimulation>;
  return {
    seed: sim.seed ?? 1,
    sessions: sim.sessions ?? 1,
    runsPerSession: sim.runsPerSession ?? 12,
    testRuns: sim.testRuns ?? 2,
    grid: sim.grid ?? 'epi',
  };
}

/** True when a cached simulated run is complete and was written by this simulator version. */
export async function simulatedRunIsCurrent(root: string, timeseries: string): Promise<boolean> {
  const marker = join(root, 'mindeye-rt.json');
  if (!existsSync(timeseries) || !existsSync(marker)) return false;
  const { GENERATOR } = await import('../sim/dataset.ts');
  const info = JSON.parse(readFileSync(marker, 'utf8')) as { complete?: boolean; generator?: string };
  return info.complete !== false && info.generator === GENERATOR;
}

/** Generates (once) and returns the demo's held-out test run `testIndex` (0-based). */
export async function prepareDemo(opts: { testIndex?: number; cacheRoot?: string; modelDir?: string } = {}): Promise<PreparedDemo> {
  const modelDir = opts.modelDir ?? DEMO_MODEL_DIR;
  const sim = demoSimulation(modelDir);
  const testIndex = opts.testIndex ?? 0;
  const { planRuns, simulateDataset } = await import('../sim/dataset.ts');
  const plan = planRuns(sim.sessions, sim.runsPerSession, sim.testRuns).filter((p) => p.split === 'test');
  const target = plan[testIndex];
  if (!target) {
    throw new MindeyeError('CLI_USAGE', 'The demo has no such test run.', {
      field: 'test run', value: testIndex, expected: `0 to ${plan.length - 1}`, fix: 'choose an existing test run',
    });
  }
  const root = join(opts.cacheRoot ?? join(REPO_ROOT, '.cache'), `demo-${sim.grid}-seed${sim.seed}-s${sim.sessions}x${sim.runsPerSession}-t${sim.testRuns}`);
  const { runPaths } = await import('../sim/dataset.ts');
  const paths = runPaths(root, target.session, target.run);
  if (!(await simulatedRunIsCurrent(root, paths.timeseries))) {
    const started = performance.now();
    logger.info({ root, session: target.session, run: target.run }, 'simulating the demo run (first start only)');
    await simulateDataset({
      out: root, grid: sim.grid, sessions: sim.sessions, runsPerSession: sim.runsPerSession, testRuns: sim.testRuns,
      seed: sim.seed, only: 'test', runs: testIndex + 1,
    });
    logger.info({ elapsedMs: Math.round(performance.now() - started) }, 'demo run simulated');
  }
  const ref = { root, subject: 1, session: target.session, run: target.run };
  const nsd = nsdSource(ref);
  return { source: nsd.source, modelDir, datasetRoot: root, stimuliFile: nsd.paths.stimuli, session: target.session, run: target.run };
}
