/**
 * Session recording (`--record-to DIR`) and its replay (`replay --record DIR`).
 *
 * Layout:
 * - run.json: the run-info event (affine as an array) and the recording format version
 * - volumes/vol_NNNNNN.nii.gz: every volume as received, one 3D NIfTI each (nothing recorded is lost)
 * - events.jsonl: every other event without voxel or image arrays, one JSON object per line
 * - trials.jsonl + betas_final.f32: one line per final trial estimate (trialId, stimulusId,
 *   onsetSec, row) and its raw betas as float32 rows of V values in mask order
 * - frames/trial_TTTT_KIND_SS.jpg: every frame sent
 * Restarting on an existing recording appends: files are opened in append mode, and existing
 * volumes are kept.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Observable } from 'rxjs';
import { MindeyeError } from '../errors.ts';
import { nowMs, type PipelineEvent, type RunInfo } from '../events.ts';
import { readNifti, writeNifti } from '../io/nifti.ts';
import type { Source, SourceEvent } from '../ingest/source.ts';

export const RECORD_FORMAT = 'mindeye-rt-record/1';

export class SessionRecorder {
  private info?: RunInfo;
  private betaRows = 0;
  private readonly trialStarts = new Map<number, number>();

  constructor(private readonly dir: string) {
    mkdirSync(join(dir, 'volumes'), { recursive: true });
    mkdirSync(join(dir, 'frames'), { recursive: true });
    if (existsSync(join(dir, 'trials.jsonl'))) {
      this.betaRows = readFileSync(join(dir, 'trials.jsonl'), 'utf8').split('\n').filter(Boolean).length;
    }
  }

  onEvent(e: PipelineEvent): void {
    switch (e.type) {
      case 'run-info': {
        this.info = e;
        for (const t of e.trials ?? []) this.trialStarts.set(t.trialId, t.onsetSec);
        writeFileSync(join(this.dir, 'run.json'), JSON.stringify({ format: RECORD_FORMAT, ...e, affine: Array.from(e.affine) }, null, 2));
        break;
      }
      case 'volume': {
        const file = join(this.dir, 'volumes', `vol_${String(e.volIdx).padStart(6, '0')}.nii.gz`);
        const voxelSizeMm = [0, 1, 2].map((c) => Math.hypot(e.affine[c], e.affine[4 + c], e.affine[8 + c])) as [number, number, number];
        writeNifti(file, e.data, { shape: e.shape, voxelSizeMm, trSec: this.info?.trSec, affine: e.affine, datatype: 'float32', gzipLevel: 1 });
        this.appendEvent({ type: 'volume', volIdx: e.volIdx, acqTimeSec: e.acqTimeSec, receivedAtMs: e.receivedAtMs, sourceId: e.sourceId });
        break;
      }
      case 'masked-volume': {
        const { values: _values, ...rest } = e;
        this.appendEvent(rest);
        break;
      }
      case 'trial-estimate': {
        const { betas, normalizedBetas: _n, ...rest } = e;
        this.appendEvent(rest);
        if (e.final) {
          appendFileSync(join(this.dir, 'betas_final.f32'), Buffer.from(Float32Array.from(betas).buffer));
          appendFileSync(join(this.dir, 'trials.jsonl'), JSON.stringify({
            trialId: e.trialId, stimulusId: e.stimulusId, onsetSec: this.trialStarts.get(e.trialId), volIdx: e.volIdx, row: this.betaRows, voxels: betas.length,
          }) + '\n');
          this.betaRows++;
        }
        break;
      }
      case 'decoded': {
        const { retrievalEmbedding: _r, priorEmbedding: _p, lowLevelLatents: _l, ...rest } = e;
        this.appendEvent(rest);
        break;
      }
      case 'frame': {
        const { image, ...rest } = e;
        const ext = e.mime === 'image/webp' ? 'webp' : e.mime === 'image/png' ? 'png' : 'jpg';
        const name = `trial_${String(e.trialId).padStart(4, '0')}_${e.kind}${e.provisional ? '-provisional' : ''}_${String(e.step).padStart(2, '0')}.${ext}`;
        writeFileSync(join(this.dir, 'frames', name), image);
        this.appendEvent({ ...rest, file: `frames/${name}` });
        break;
      }
      default:
        this.appendEvent(e);
    }
  }

  private appendEvent(e: object): void {
    appendFileSync(join(this.dir, 'events.jsonl'), JSON.stringify(e) + '\n');
  }
}

/** Replays a recording's volumes with its run-info (trials, TR, motion decision). */
export function recordSource(dir: string): Source {
  const runFile = join(dir, 'run.json');
  if (!existsSync(runFile)) {
    throw new MindeyeError('CLI_USAGE', 'Not a mindeye-rt recording: run.json is missing.', {
      file: runFile, field: '--record', fix: 'pass a directory written by --record-to',
    });
  }
  const saved = JSON.parse(readFileSync(runFile, 'utf8')) as Omit<RunInfo, 'affine'> & { affine: number[]; format: string };
  if (saved.format !== RECORD_FORMAT) {
    throw new MindeyeError('CLI_USAGE', 'Unsupported recording format.', { file: runFile, field: 'format', value: saved.format, expected: RECORD_FORMAT, fix: 'record the session again with this version' });
  }
  const files = readdirSync(join(dir, 'volumes')).filter((f) => /^vol_\d{6}\.nii\.gz$/.test(f)).sort();
  return (ctx) => new Observable<SourceEvent>((subscriber) => {
    let stopped = false;
    (async () => {
      const { format: _f, ...rest } = saved;
      subscriber.next({ ...rest, type: 'run-info', runId: ctx.runId, affine: Float64Array.from(saved.affine), source: `recording ${dir} (${saved.source})` });
      for (const f of files) {
        const volIdx = Number(f.slice(4, 10));
        await ctx.pacing.waitTurn(volIdx, saved.trSec);
        if (stopped) return;
        const img = readNifti(join(dir, 'volumes', f));
        subscriber.next({
          type: 'volume', runId: ctx.runId, volIdx, acqTimeSec: volIdx * saved.trSec, receivedAtMs: nowMs(),
          shape: img.header.shape, affine: img.header.affine, data: img.data, sourceId: join(dir, 'volumes', f),
        });
      }
      subscriber.complete();
    })().catch((err) => subscriber.error(err));
    return () => { stopped = true; };
  });
}
