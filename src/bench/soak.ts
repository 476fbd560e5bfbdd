/**
 * Soak: many replays back to back at max speed, with memory and latency sampled after each run,
 * so that a leak or a slow drift shows up as a trend rather than as one bad figure.
 *
 * Memory is read after a full garbage collection (when the collector can be reached), so the
 * heap figure reflects what each run left behind, not what is waiting to be collected. RSS is
 * reported too: it is the operating system's figure, but it also contains the allocator's free
 * lists, so it settles after a few runs instead of dropping.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { RunReport } from '../session/report.ts';

export interface SoakRun {
  run: number;
  startedAtSec: number;
  durationSec: number;
  volumes: number;
  trialsDecoded: number;
  realtimeFactor?: number;
  /** Resident set size after the run and a full collection, in MiB. */
  rssMb: number;
  /** V8 heap in use after the run and a full collection, in MiB. */
  heapUsedMb: number;
  /** ArrayBuffer memory (volumes, tensors held by JavaScript) after the run, in MiB. */
  arrayBuffersMb: number;
  /** p95 per stage of this run, in ms. */
  p95Ms: Record<string, number>;
}

export interface SoakSummary {
  minutes: number;
  runs: number;
  durationSec: number;
  volumes: number;
  rssMb: { first: number; last: number; max: number; slopePerRun: number };
  heapUsedMb: { first: number; last: number; max: number; slopePerRun: number };
  /** p95 latency per stage in the first and the last run. */
  p95Ms: { first: Record<string, number>; last: Record<string, number> };
}

export interface SoakResult {
  summary: SoakSummary;
  series: SoakRun[];
}

export interface SoakOptions {
  /** Wall-clock length. A run that starts before the end is finished. */
  minutes: number;
  /** Minimum number of runs, even when the time is up, because a trend needs several points. */
  minRuns?: number;
  /** Replays one run and returns its report. */
  replayOnce(): Promise<RunReport>;
  /** Called after every run, for progress lines and for writing partial results. */
  onRun?(run: SoakRun, soFar: SoakRun[]): void;
}

/** The stages whose p95 the soak follows over time. */
export const SOAK_STAGES = ['preprocess', 'glm', 'decode', 'render', 'betaToFirstFrame', 'volumeToDecode'];

let collect: (() => void) | undefined | null;

/** Returns a function that runs a full garbage collection, or undefined where V8 refuses. */
export function fullCollector(): (() => void) | undefined {
  if (collect !== undefined) return collect ?? undefined;
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') {
    collect = existing;
    return collect;
  }
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    collect = typeof gc === 'function' ? (gc as () => void) : null;
  } catch {
    collect = null;
  }
  return collect ?? undefined;
}

function mib(bytes: number): number {
  return Math.round((bytes / 1048576) * 10) / 10;
}

/** Least-squares slope of values against their index (per run). */
export function slope(values: number[]): number {
  const n = values.length;
  if (n < 2) return 0;
  const xMean = (n - 1) / 2;
  const yMean = values.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  values.forEach((y, x) => {
    num += (x - xMean) * (y - yMean);
    den += (x - xMean) ** 2;
  });
  return num / den;
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const gc = fullCollector();
  const started = performance.now();
  const until = started + options.minutes * 60_000;
  const minRuns = options.minRuns ?? 2;
  const series: SoakRun[] = [];
  while (performance.now() < until || series.length < minRuns) {
    const runStart = performance.now();
    const report = await options.replayOnce();
    const durationSec = (performance.now() - runStart) / 1000;
    gc?.();
    gc?.();
    const mem = process.memoryUsage();
    const s = report.summary as Record<string, unknown>;
    const latency = (s.latencyMs ?? {}) as Record<string, { p95: number }>;
    const p95Ms: Record<string, number> = {};
    for (const stage of SOAK_STAGES) if (latency[stage]) p95Ms[stage] = Math.round(latency[stage].p95 * 10) / 10;
    const entry: SoakRun = {
      run: series.length + 1,
      startedAtSec: Math.round((runStart - started) / 100) / 10,
      durationSec: Math.round(durationSec * 10) / 10,
      volumes: Number(s.volumesProcessed ?? 0),
      trialsDecoded: Number(s.trialsDecoded ?? 0),
      rssMb: mib(mem.rss),
      heapUsedMb: mib(mem.heapUsed),
      arrayBuffersMb: mib(mem.arrayBuffers),
      p95Ms,
    };
    if (typeof s.realtimeFactor === 'number') entry.realtimeFactor = Math.round(s.realtimeFactor * 10) / 10;
    series.push(entry);
    options.onRun?.(entry, series);
  }
  return { summary: summarizeSoak(options.minutes, series, (performance.now() - started) / 1000), series };
}

export function summarizeSoak(minutes: number, series: SoakRun[], durationSec: number): SoakSummary {
  const pick = (key: 'rssMb' | 'heapUsedMb') => {
    const values = series.map((r) => r[key]);
    return { first: values[0], last: values[values.length - 1], max: Math.max(...values), slopePerRun: Math.round(slope(values) * 100) / 100 };
  };
  return {
    minutes,
    runs: series.length,
    durationSec: Math.round(durationSec),
    volumes: series.reduce((a, r) => a + r.volumes, 0),
    rssMb: pick('rssMb'),
    heapUsedMb: pick('heapUsedMb'),
    p95Ms: { first: series[0]?.p95Ms ?? {}, last: series[series.length - 1]?.p95Ms ?? {} },
  };
}

/** Formats the progress line of one run. */
export function soakLine(r: SoakRun): string {
  const lat = Object.entries(r.p95Ms).map(([k, v]) => `${k} ${v}`).join(', ');
  return `soak run ${r.run} at ${r.startedAtSec} s: ${r.volumes} volumes in ${r.durationSec} s, RSS ${r.rssMb} MiB, heap ${r.heapUsedMb} MiB; p95 ms: ${lat}`;
}
