/** Shared fixtures and checks for the ingest tests. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, Observable, toArray } from 'rxjs';
import { readNifti, type NiftiImage } from '../../src/io/nifti.ts';
import { Pacer } from '../../src/ingest/pacing.ts';
import type { Source, SourceEvent } from '../../src/ingest/source.ts';

export const FIXTURES = new URL('../../data/dicom/', import.meta.url).pathname;

export interface ReferenceSeries {
  name: string;
  dir: string;
  reference: string;
  sidecar: string;
  volumes: number;
}

/** Every committed series that has a dcm2niix reference conversion. */
export const REFERENCE_SERIES: ReferenceSeries[] = [
  { name: 'mosaic ascending F>>H', dir: 'siemens-mosaic/ep2d_Asc_2', reference: '2_ep2d_Asc_first1.nii.gz', sidecar: '2_ep2d_Asc.json', volumes: 1 },
  { name: 'mosaic interleaved H>>F', dir: 'siemens-mosaic/ep2d_Int_HF_5', reference: '5_ep2d_Int_HF_first1.nii.gz', sidecar: '5_ep2d_Int_HF.json', volumes: 1 },
  { name: 'mosaic multiband ascending H>>F', dir: 'siemens-mosaic/cmrr_Asc_HF_7', reference: '7_cmrr_Asc_HF_first1.nii.gz', sidecar: '7_cmrr_Asc_HF.json', volumes: 1 },
  { name: 'mosaic multiband interleaved F>>H', dir: 'siemens-mosaic/cmrr_Int_8', reference: '8_cmrr_Int_first1.nii.gz', sidecar: '8_cmrr_Int.json', volumes: 1 },
  { name: 'XA enhanced multi-frame', dir: 'siemens-xa-enhanced/6_REST1_w_SMS_PF7-8', reference: 'Siemens_REST1_w_SMS_PF7-8_6_first6.nii.gz', sidecar: 'Siemens_REST1_w_SMS_PF7-8_6.json', volumes: 6 },
  { name: 'GE per-slice real-time', dir: 'ge-realtime-slices/2_epiRT_ascending', reference: 'GE_Brain_Routine_2_first3.nii.gz', sidecar: 'GE_Brain_Routine_2.json', volumes: 3 },
];

export function fixture(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}

export function dicomFiles(dir: string): string[] {
  return readdirSync(fixture(dir)).filter((f) => !f.endsWith('.md') && f !== 'LICENSE' && f !== 'reference').map((f) => fixture(dir, f));
}

export function referenceOf(series: ReferenceSeries): NiftiImage {
  return readNifti(fixture(series.dir, 'reference', series.reference));
}

export function scratchDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `mindeye-ingest-${prefix}-`));
}

/** Largest absolute difference between two affines. */
export function affineError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < 16; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** Asserts that `data` equals volume `volIdx` of `ref` voxel for voxel. */
export function assertVolumeEquals(data: Float32Array, ref: NiftiImage, volIdx: number, label: string): void {
  const n = ref.header.shape[0] * ref.header.shape[1] * ref.header.shape[2];
  assert.equal(data.length, n, `${label}: voxel count`);
  const expected = ref.data.subarray(volIdx * n, (volIdx + 1) * n);
  let mismatches = 0;
  let first = -1;
  for (let i = 0; i < n; i++) {
    if (data[i] !== expected[i]) {
      mismatches++;
      if (first < 0) first = i;
    }
  }
  assert.equal(mismatches, 0, `${label}: ${mismatches} voxels differ, first at ${first} (${data[first]} vs ${expected[first]})`);
}

export function hasDcm2niix(): boolean {
  return spawnSync('dcm2niix', ['-v']).error === undefined;
}

/** Runs Debian's dcm2niix on `inputDir` and returns its NIfTI output. */
export function runDcm2niix(inputDir: string): NiftiImage {
  const out = scratchDir('dcm2niix');
  const result = spawnSync('dcm2niix', ['-z', 'n', '-f', 'ref', '-o', out, inputDir], { encoding: 'utf8' });
  assert.equal(result.status, 0, `dcm2niix failed: ${result.stdout}${result.stderr}`);
  const nii = readdirSync(out).filter((f) => f.endsWith('.nii'));
  assert.equal(nii.length, 1, `dcm2niix wrote ${nii.join(', ') || 'nothing'} for ${inputDir}`);
  return readNifti(join(out, nii[0]));
}

export function hasPythonModule(module: string): boolean {
  return spawnSync('/usr/bin/python3', ['-c', `import ${module}`]).status === 0;
}

/** Subscribes to a source and collects every event until it completes. */
export function collect(source: Source, runId = 'test-run'): Promise<SourceEvent[]> {
  return firstValueFrom(source({ runId, pacing: new Pacer({ kind: 'max' }) }).pipe(toArray()));
}

/** Formats an event as a compact label for exact sequence checks: `volume 3`, `gap 4`, `warning duplicate 2`. */
export function label(e: SourceEvent): string {
  switch (e.type) {
    case 'run-info': return 'run-info';
    case 'volume': return `volume ${e.volIdx}`;
    case 'gap': return `gap ${e.volIdx}`;
    case 'warning': return `warning ${e.kind}${e.volIdx === undefined ? '' : ` ${e.volIdx}`}`;
  }
}

/** Subscribes and exposes events as they come, with a wait for the next matching one. */
export class EventLog {
  readonly events: SourceEvent[] = [];
  completed = false;
  error: unknown;
  private onDone: (() => void)[] = [];
  private waiters: { match: (e: SourceEvent) => boolean; resolve: (e: SourceEvent) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }[] = [];
  private readonly stop: () => void;

  constructor(source: Source, runId = 'test-run') {
    const subscription = (source({ runId, pacing: new Pacer({ kind: 'max' }) }) as Observable<SourceEvent>).subscribe({
      next: (e) => {
        this.events.push(e);
        for (const w of [...this.waiters]) {
          if (w.match(e)) {
            clearTimeout(w.timer);
            this.waiters = this.waiters.filter((x) => x !== w);
            w.resolve(e);
          }
        }
      },
      complete: () => {
        this.completed = true;
        for (const done of this.onDone) done();
      },
      error: (err) => {
        this.error = err;
        for (const done of this.onDone) done();
      },
    });
    this.stop = () => subscription.unsubscribe();
  }

  /** Resolves with the first event (already seen or future) that matches; rejects after `timeoutMs`. */
  waitFor(match: (e: SourceEvent) => boolean, what: string, timeoutMs = 10000): Promise<SourceEvent> {
    const seen = this.events.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; events so far: ${this.events.map(label).join(', ')}`)), timeoutMs);
      this.waiters.push({ match, resolve, reject, timer });
    });
  }

  /** Resolves when the source completes or fails; rejects after `timeoutMs`. */
  waitForEnd(timeoutMs = 10000): Promise<void> {
    if (this.completed || this.error !== undefined) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for completion; events so far: ${this.events.map(label).join(', ')}`)), timeoutMs);
      this.onDone.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  labels(): string[] {
    return this.events.map(label);
  }

  close(): void {
    this.stop();
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const BIN = new URL('../../bin/mindeye-rt.js', import.meta.url).pathname;

/** Runs `mindeye-rt ARGS...` as a user would, in a child process. */
export function runCli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, MINDEYE_LOG_LEVEL: 'silent' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    child.once('error', reject);
    child.once('close', (status) => resolve({ status: status ?? -1, stdout, stderr }));
  });
}
