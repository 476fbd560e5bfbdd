/**
 * End-to-end check of the dashboard in a real browser (/usr/bin/chromium through
 * playwright-core). A replay is started with the command line, as a user would run it. The
 * page's numbers are compared with the run's --report JSON, and the screenshot is saved to
 * .test-out/dashboard.png (docs/img/dashboard.png, the README's picture, with UPDATE_SCREENSHOT=1).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { chromium, type Page } from 'playwright-core';
import { REPO_ROOT, HAXBY_BOLD, HAXBY_EVENTS, TOKEN } from './fixtures.ts';
import { fitHaxbyModel } from './replay-session.ts';

const CHROMIUM = '/usr/bin/chromium';
// The committed README screenshot is rewritten only on request (UPDATE_SCREENSHOT=1), so a test
// run leaves the working tree clean.
const SCREENSHOT = process.env.UPDATE_SCREENSHOT === '1' ? join(REPO_ROOT, 'docs/img/dashboard.png') : join(REPO_ROOT, '.test-out/dashboard.png');

interface Report {
  run: { trialCount: number };
  trials: { trialId: number; stimulusId: string; frames: number; final?: { retrievalRank?: number } }[];
  summary: {
    volumesProcessed: number;
    volumesFlagged: number;
    gaps: number;
    trialsDecoded: number;
    retrievalTop1?: number;
    latencyMs: Record<string, { p50: number; p95: number }>;
  };
}

/**
 * Returns the replay the test drives: the embedded demo (simulated subject, shipped model with
 * low-level images) at 20x, or with MINDEYE_BROWSER_REPLAY=haxby the Haxby BIDS run with a
 * label classifier that `fit` makes (no images).
 */
function replayArgs(): { args: string[]; label: string } {
  if (process.env.MINDEYE_BROWSER_REPLAY === 'haxby') {
    return {
      label: 'Haxby BIDS replay with a fitted label classifier',
      args: ['--bids', HAXBY_BOLD, '--events', HAXBY_EVENTS, '--model', fitHaxbyModel(), '--speed', '20'],
    };
  }
  return { label: 'demo replay (simulated subject)', args: ['--demo', '--speed', '20'] };
}

function startReplay(args: string[], reportFile: string): { child: ChildProcess; url: Promise<string>; output: () => string } {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'bin/mindeye-rt.js'), 'replay', ...args, '--port', '0', '--token', TOKEN, '--report', reportFile], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MINDEYE_LOG_LEVEL: 'warn' },
  });
  let output = '';
  const url = new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const match = /dashboard at (http:\/\/127\.0\.0\.1:\d+\/\?token=\S+)/.exec(output);
      if (match) resolve(match[1]);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(new Error(`replay exited with status ${code} before printing the dashboard URL:\n${output}`)));
  });
  return { child, url, output: () => output };
}

async function numberAt(page: Page, selector: string): Promise<number> {
  const value = await page.locator(selector).first().getAttribute('data-value');
  return value === null || value === '' ? Number.NaN : Number(value);
}

async function waitForNumber(page: Page, selector: string, predicate: (n: number) => boolean, what: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await numberAt(page, selector);
    if (predicate(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last ${selector} = ${value})`);
    await page.waitForTimeout(200);
  }
}

async function waitForReport(file: string, timeoutMs: number): Promise<Report> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for the report ${file}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
  return JSON.parse(readFileSync(file, 'utf8')) as Report;
}

test('dashboard in chromium matches the replay report', { timeout: 240_000 }, async (t: TestContext) => {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} is missing: install the Debian chromium package (scripts/setup.sh does) to run the browser test`);
    return;
  }
  const scratch = mkdtempSync(join(tmpdir(), 'mindeye-browser-'));
  const reportFile = join(scratch, 'report.json');
  const { args, label } = replayArgs();
  t.diagnostic(`replay: ${label}`);
  const replay = startReplay(args, reportFile);
  const context = await chromium.launchPersistentContext(join(scratch, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const url = await replay.url;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/\?token=/);
    const page = context.pages()[0] ?? (await context.newPage());
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(url);
    assert.equal(new URL(page.url()).searchParams.get('token'), null, 'the page removes the token from the address bar');

    // Several trials decoded, then reload mid-run: the state comes back at once.
    const decodedBefore = await waitForNumber(page, '#metric-decoded', (n) => n >= 3, '3 decoded trials', 120_000);
    const motionBefore = await numberAt(page, '#motion-count');
    assert.ok(motionBefore > 0, 'motion panel shows processed volumes');
    await page.reload();
    await page.waitForSelector('#connection[data-value="open"]');
    const decodedAfter = await waitForNumber(page, '#metric-decoded', (n) => n >= decodedBefore, 'the restored decoded count', 5_000);
    assert.ok(decodedAfter >= decodedBefore);
    assert.ok((await numberAt(page, '#motion-count')) >= motionBefore, 'motion series restored after reload');
    assert.equal(await page.locator('#btn-pause').isDisabled(), false, 'controls keep the token across the reload');

    // Pause holds the replay, resume and a speed change continue it.
    await page.click('#btn-pause');
    await page.waitForSelector('#status-state[data-value="paused"]', { timeout: 5_000 });
    // Volumes already released before the pause may still finish preprocessing.
    await page.waitForTimeout(1500);
    const heldVolumes = await numberAt(page, '#motion-count');
    await page.waitForTimeout(1500);
    assert.equal(await numberAt(page, '#motion-count'), heldVolumes, 'no volume is processed while paused');
    await page.click('#btn-resume');
    await page.waitForSelector('#status-state[data-value="running"]', { timeout: 5_000 });
    await page.selectOption('#speed-select', '50');
    await page.waitForSelector('#status-speed:has-text("speed 50x")', { timeout: 5_000 });
    await waitForNumber(page, '#motion-count', (n) => n > heldVolumes, 'volumes after resuming', 30_000);

    const report = await waitForReport(reportFile, 150_000);
    await page.waitForSelector('#status-state[data-value="ended"]', { timeout: 15_000 });
    await page.waitForTimeout(600);

    // Trials, ranks and retrieval accuracy.
    assert.equal(await numberAt(page, '#metric-decoded'), report.summary.trialsDecoded);
    if (report.summary.retrievalTop1 !== undefined) {
      assert.ok(Math.abs((await numberAt(page, '#metric-top1')) - report.summary.retrievalTop1) < 1e-9, 'top-1 matches the report');
    }
    const cards = await page.locator('#gallery .card').evaluateAll((els) => els.map((el) => ({ trial: Number((el as HTMLElement).dataset.trial), rank: (el as HTMLElement).dataset.rank })));
    assert.equal(cards.length, Math.min(40, report.summary.trialsDecoded));
    for (const card of cards) {
      const rank = report.trials.find((tr) => tr.trialId === card.trial)?.final?.retrievalRank;
      assert.equal(card.rank, rank === undefined ? '' : String(rank), `gallery rank of trial ${card.trial}`);
    }
    assert.ok((await page.locator('#retrieval-list li').count()) > 0, 'retrieval panel lists candidates');

    // Motion and quality: one point per processed volume, and the same flagged and gap counts.
    assert.equal(await numberAt(page, '#motion-count'), report.summary.volumesProcessed);
    const chipCount = async (kind: string): Promise<number> => {
      const chip = page.locator(`#warning-counts .chip[data-kind="${kind}"]`);
      return (await chip.count()) === 0 ? 0 : Number(await chip.getAttribute('data-value'));
    };
    assert.equal(await chipCount('flagged'), report.summary.volumesFlagged, 'flagged volumes match the report');
    assert.equal(await chipCount('gap'), report.summary.gaps, 'gaps match the report');

    // Latency: every stage of the report that the page lists has the same p50 and p95.
    const stages = await page.locator('#latency-table tbody tr').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.stage!));
    const shared = stages.filter((s) => s in report.summary.latencyMs);
    assert.ok(shared.length >= 2, `latency stages shared with the report: ${shared.join(', ')}`);
    for (const stage of shared) {
      const p50 = await numberAt(page, `#latency-table tr[data-stage="${stage}"] td.p50`);
      const p95 = await numberAt(page, `#latency-table tr[data-stage="${stage}"] td.p95`);
      assert.ok(Math.abs(p50 - report.summary.latencyMs[stage].p50) < 2e-3, `${stage} p50 ${p50} vs report ${report.summary.latencyMs[stage].p50}`);
      assert.ok(Math.abs(p95 - report.summary.latencyMs[stage].p95) < 2e-3, `${stage} p95 ${p95} vs report ${report.summary.latencyMs[stage].p95}`);
    }

    // Frames: when the model makes images, the current trial shows its final frame.
    const framesInReport = report.trials.reduce((sum, tr) => sum + tr.frames, 0);
    if (framesInReport > 0) {
      const width = await page.locator('#frame-final img').evaluate((img) => (img as HTMLImageElement).naturalWidth);
      assert.ok(width > 0, 'final frame is shown');
      assert.ok((await page.locator('#gallery .card img[alt^="reconstruction"]').count()) > 0, 'gallery shows reconstructions');
    } else {
      t.diagnostic('the model makes no images, so the frame panels stay empty');
    }

    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    // A palette PNG keeps the committed screenshot near 0.5 MB instead of 1.4 MB.
    const screenshot = await page.screenshot({ fullPage: true });
    await sharp(screenshot).png({ palette: true, compressionLevel: 9, effort: 10 }).toFile(SCREENSHOT);
    const stats = await sharp(SCREENSHOT).stats();
    const spread = Math.max(...stats.channels.map((c) => c.stdev));
    assert.ok(spread > 10, `screenshot is not blank (pixel standard deviation ${spread.toFixed(1)})`);
    assert.deepEqual(pageErrors, [], 'the page raised no errors');
  } finally {
    await context.close();
    replay.child.kill('SIGINT');
    await new Promise((resolve) => replay.child.once('exit', resolve));
    rmSync(scratch, { recursive: true, force: true });
  }
});
