/**
 * A DashboardSession over a real replay. The committed Haxby run goes through the project's
 * pipeline (runSession: BIDS source, mask, trial GLM, and decode with a classifier that
 * `mindeye-rt fit` fits on three other runs). Every event of its bus reaches the dashboard.
 *
 * `start()` begins the run, so a test can connect its clients first. `stop()` pauses the pacer
 * for good (runSession has no cancel); the test ends by closing the dashboard.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Subject } from 'rxjs';
import type { DashboardSession, FeedbackInput, SessionState } from '../../dashboard/server.ts';
import type { PipelineEvent } from '../../src/events.ts';
import { Pacer } from '../../src/ingest/pacing.ts';
import { bidsSource } from '../../src/ingest/bids.ts';
import { formatSpeed, type Speed } from '../../src/ingest/source.ts';
import { DEFAULT_PROCESSING } from '../../src/session/options.ts';
import { runSession, type SessionResult } from '../../src/session/run.ts';
import { HAXBY_BOLD, HAXBY_EVENTS, HAXBY_MASK, REPO_ROOT } from './fixtures.ts';

let fittedModelDir: string | undefined;

/** Fits a Haxby label classifier on runs 2-4 with the CLI (once per test process). */
export function fitHaxbyModel(): string {
  if (fittedModelDir !== undefined && existsSync(join(fittedModelDir, 'manifest.json'))) return fittedModelDir;
  const out = join(mkdtempSync(join(tmpdir(), 'mindeye-dashboard-')), 'haxby-model');
  const runs = [2, 3, 4].flatMap((r) => {
    const dir = `${REPO_ROOT}data/haxby2001-sub001/sub001/BOLD/task001_run00${r}`;
    return ['--bids', `${dir}/bold_1slice.nii.gz`, '--events', `${dir}/bold_events.tsv`];
  });
  const result = spawnSync(process.execPath, [`${REPO_ROOT}bin/mindeye-rt.js`, 'fit', ...runs, '--mask', HAXBY_MASK, '--out', out, '--target', 'labels'], {
    encoding: 'utf8',
    env: { ...process.env, MINDEYE_LOG_LEVEL: 'warn' },
  });
  if (result.status !== 0) throw new Error(`mindeye-rt fit failed (status ${result.status}): ${result.stderr}`);
  fittedModelDir = out;
  return out;
}

export class HaxbyReplaySession implements DashboardSession {
  readonly bus = new Subject<PipelineEvent>();
  readonly events$ = this.bus.asObservable();
  readonly inputs: FeedbackInput[] = [];
  readonly simulated = false;
  readonly pacer: Pacer;
  private state: SessionState = 'idle';
  private running?: Promise<SessionResult>;

  constructor(private readonly opts: { modelDir: string; reportFile: string; speed: Speed }) {
    this.pacer = new Pacer(opts.speed);
  }

  readonly control = {
    start: (): void => {
      if (this.running !== undefined) return;
      this.state = 'running';
      this.running = runSession({
        source: bidsSource({ bold: HAXBY_BOLD, events: HAXBY_EVENTS }),
        processing: { ...DEFAULT_PROCESSING, maskFile: HAXBY_MASK },
        modelDir: this.opts.modelDir,
        device: 'cpu',
        speed: this.opts.speed,
        pacer: this.pacer,
        reportFile: this.opts.reportFile,
        onEvent: (event) => this.bus.next(event),
      });
      this.running.then(
        () => { this.state = 'ended'; },
        () => { this.state = 'ended'; },
      );
    },
    pause: (): void => { this.pacer.pause(); this.state = 'paused'; },
    resume: (): void => { this.pacer.resume(); this.state = 'running'; },
    stop: (): void => { this.pacer.pause(); this.state = 'stopped'; },
    setSpeed: (speed: Speed): void => this.pacer.setSpeed(speed),
    status: (): { state: SessionState; speed: string } => ({ state: this.state, speed: formatSpeed(this.pacer.speed) }),
  };

  onFeedbackInput(msg: FeedbackInput): void {
    this.inputs.push(msg);
  }

  async image(): Promise<Uint8Array | undefined> {
    return undefined;
  }

  /** Resolves with the session result once the run ended. */
  async finished(): Promise<SessionResult> {
    if (this.running === undefined) throw new Error('the replay was not started');
    return this.running;
  }
}
