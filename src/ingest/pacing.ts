/**
 * Replay pacing. Volume `i` is due at `startMs + i * trSec * 1000 / factor`. A speed change or a
 * pause re-anchors the schedule at the current volume, so the replay neither jumps nor bursts
 * to catch up.
 */
import type { PacingControl, Speed } from './source.ts';

export class Pacer implements PacingControl {
  private currentSpeed: Speed;
  private isPaused = false;
  private anchorMs: number | undefined;
  private anchorIdx = 0;
  private lastIdx = 0;
  private resumeWaiters: (() => void)[] = [];

  constructor(speed: Speed) {
    this.currentSpeed = speed;
  }

  get speed(): Speed {
    return this.currentSpeed;
  }

  get paused(): boolean {
    return this.isPaused;
  }

  setSpeed(speed: Speed): void {
    this.currentSpeed = speed;
    this.anchorMs = undefined;
  }

  pause(): void {
    this.isPaused = true;
  }

  resume(): void {
    this.isPaused = false;
    this.anchorMs = undefined;
    const waiters = this.resumeWaiters;
    this.resumeWaiters = [];
    for (const w of waiters) w();
  }

  async waitTurn(volIdx: number, trSec: number): Promise<void> {
    while (this.isPaused) await new Promise<void>((r) => this.resumeWaiters.push(r));
    this.lastIdx = volIdx;
    const speed = this.currentSpeed;
    if (speed.kind === 'max') return;
    const factor = speed.kind === 'realtime' ? 1 : speed.factor;
    if (this.anchorMs === undefined) {
      this.anchorMs = performance.now();
      this.anchorIdx = volIdx;
      return;
    }
    const dueMs = this.anchorMs + ((volIdx - this.anchorIdx) * trSec * 1000) / factor;
    const waitMs = dueMs - performance.now();
    if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
    // A pause that began while sleeping delays this volume too.
    while (this.isPaused) await new Promise<void>((r) => this.resumeWaiters.push(r));
  }

  /** Index of the last volume released, for status displays. */
  get lastVolumeIndex(): number {
    return this.lastIdx;
  }
}
