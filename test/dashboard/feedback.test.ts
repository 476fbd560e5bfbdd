import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { startDashboard, type DashboardHandle } from '../../dashboard/server.ts';
import { TOKEN, REPO_ROOT, TestSession, emitTrial, noiseJpeg } from './fixtures.ts';
import { HaxbyReplaySession, fitHaxbyModel } from './replay-session.ts';
import { RecordingClient } from './ws-client.ts';

const LABELS = ['scissors', 'face', 'cat', 'shoe', 'house', 'scrambledpix', 'bottle', 'chair'];
const outputSchema = JSON.parse(readFileSync(join(REPO_ROOT, 'dashboard/schema/feedback-output.schema.json'), 'utf8'));
const validateOutput = new Ajv({ strict: true, allowUnionTypes: true }).compile(outputSchema);

function feedbackUrl(handle: DashboardHandle, token?: string): string {
  const url = new URL(handle.url);
  return `ws://${url.host}/feedback${token === undefined ? '' : `?token=${encodeURIComponent(token)}`}`;
}

function runClient(args: string[], onStderr?: (text: string) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'examples/feedback-client.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    onStderr?.(stderr);
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('feedback API', () => {
  let session: TestSession;
  let handle: DashboardHandle;

  before(async () => {
    session = new TestSession();
    session.simulated = true;
    handle = await startDashboard(session, { host: '127.0.0.1', port: 0, token: TOKEN });
  });

  after(async () => {
    await handle.close();
  });

  test('hello says whether input is allowed', async () => {
    const viewer = await RecordingClient.connect(feedbackUrl(handle));
    const sender = await RecordingClient.connect(feedbackUrl(handle, TOKEN));
    await viewer.waitFor(() => viewer.json('hello').length === 1, 'hello');
    await sender.waitFor(() => sender.json('hello').length === 1, 'hello');
    const hello = viewer.json('hello')[0];
    assert.equal(hello.canSend, false);
    assert.equal(hello.simulated, true);
    assert.equal(hello.protocol, 'mindeye-rt-feedback');
    assert.equal(sender.json('hello')[0].canSend, true);
    assert.ok(validateOutput(hello), JSON.stringify(validateOutput.errors));
    viewer.close();
    sender.close();
  });

  test('wrong token is rejected at connect', async () => {
    const rejected = await RecordingClient.expectRejected(feedbackUrl(handle, 'not-the-token'));
    assert.equal(rejected.status, 403);
    assert.match(JSON.parse(rejected.body).message, /session token given is wrong/);
    const bearer = await RecordingClient.expectRejected(feedbackUrl(handle), { authorization: 'Bearer not-the-token' });
    assert.equal(bearer.status, 403);
  });

  test('input without a token is rejected', async () => {
    const client = await RecordingClient.connect(feedbackUrl(handle));
    client.send({ type: 'trigger', id: 't1', pulseIndex: 0 });
    client.send({ type: 'stimulus-onset', id: 's1', stimulusId: 'face' });
    await client.waitFor(() => client.json('error').length === 2, 'two error replies');
    const [trigger, onset] = client.json('error');
    assert.equal(trigger.code, 'FEEDBACK_AUTH');
    assert.equal(trigger.id, 't1');
    assert.match(trigger.message as string, /needs the session token/);
    assert.equal(onset.code, 'FEEDBACK_AUTH');
    assert.equal(session.inputs.length, 0);
    client.close();
  });

  test('trigger and onset with the token reach the session', async () => {
    const client = await RecordingClient.connect(feedbackUrl(handle), { authorization: `Bearer ${TOKEN}` });
    client.send({ type: 'trigger', id: 7, pulseIndex: 3, clientTimeMs: 1234.5 });
    client.send({ type: 'stimulus-onset', id: 'on-1', stimulusId: '46003', trialId: 0, onsetSec: 4, durationSec: 3 });
    await client.waitFor(() => client.json('ack').length === 2, 'two acks');
    const [triggerAck, onsetAck] = client.json('ack');
    assert.equal(triggerAck.inputType, 'trigger');
    assert.equal(triggerAck.id, 7);
    assert.equal(onsetAck.inputType, 'stimulus-onset');
    assert.ok(validateOutput(triggerAck), JSON.stringify(validateOutput.errors));
    assert.equal(session.inputs.length, 2);
    const [trigger, onset] = session.inputs;
    assert.equal(trigger.type, 'trigger');
    assert.equal(trigger.type === 'trigger' && trigger.pulseIndex, 3);
    assert.equal(trigger.clientTimeMs, 1234.5);
    assert.equal(trigger.receivedAtMs, triggerAck.receivedAtMs);
    assert.deepEqual(onset.type === 'stimulus-onset' && [onset.stimulusId, onset.trialId, onset.onsetSec, onset.durationSec], ['46003', 0, 4, 3]);
    session.inputs.length = 0;
    client.close();
  });

  test('invalid input names the field', async () => {
    const client = await RecordingClient.connect(feedbackUrl(handle, TOKEN));
    const cases: [unknown, RegExp][] = [
      ['{not json', /not valid JSON/],
      [{ type: 'trigger', pulseIndex: -1 }, /field "pulseIndex" is -1: expected a value that must be >= 0/],
      [{ type: 'stimulus-onset' }, /missing the required field "stimulusId"/],
      [{ type: 'stimulus-onset', stimulusId: '' }, /field "stimulusId" is ""/],
      [{ type: 'stimulus-onset', stimulusId: 'face', durationSec: 0 }, /field "durationSec" is 0/],
      [{ type: 'trigger', volume: 3 }, /unknown field "volume"/],
      [{ type: 'reset' }, /field "type" is "reset": expected one of "subscribe", "trigger", "stimulus-onset"/],
      [[1, 2], /field "type" is undefined/],
      [{ type: 'subscribe', frames: 'some' }, /field "frames" is "some"/],
    ];
    for (const [message] of cases) client.send(message);
    await client.waitFor(() => client.json('error').length === cases.length, `${cases.length} error replies`);
    client.json('error').forEach((error, n) => {
      assert.equal(error.code, 'FEEDBACK_INVALID', `case ${n}`);
      assert.match(error.message as string, cases[n][1], `case ${n}`);
    });
    client.socket.send(Buffer.from([1, 2, 3]), { binary: true });
    await client.waitFor(() => client.json('error').length === cases.length + 1, 'the binary message error');
    assert.match(client.json('error').at(-1)!.message as string, /binary messages are not accepted/);
    assert.equal(session.inputs.length, 0);
    client.close();
  });

  test('session failure is reported to the client', async () => {
    const client = await RecordingClient.connect(feedbackUrl(handle, TOKEN));
    session.failInput = true;
    try {
      client.send({ type: 'trigger', id: 'x' });
      await client.waitFor(() => client.json('error').length === 1, 'the error reply');
      const error = client.json('error')[0];
      assert.equal(error.code, 'FEEDBACK_FAILED');
      assert.match(error.message as string, /trial table is closed/);
    } finally {
      session.failInput = false;
      client.close();
    }
  });

  test('results arrive in order with timestamps', async () => {
    const client = await RecordingClient.connect(feedbackUrl(handle));
    const everything = await RecordingClient.connect(feedbackUrl(handle));
    const silent = await RecordingClient.connect(feedbackUrl(handle));
    everything.send({ type: 'subscribe', decoded: 'all', frames: 'all', images: 'none' });
    silent.send({ type: 'subscribe', decoded: 'none', frames: 'none' });
    await everything.waitFor(() => everything.json('ack').length === 1, 'the subscribe ack');
    await silent.waitFor(() => silent.json('ack').length === 1, 'the subscribe ack');
    session.emit({
      type: 'run-info', runId: 'fb', trSec: 2, shape: [2, 2, 2], affine: new Float64Array(16), source: 'test', motionCorrection: false,
      trials: LABELS.map((label, trialId) => ({ trialId, onsetSec: trialId * 10, durationSec: 3, stimulusId: label })),
    });
    const jpeg = await noiseJpeg(5, 64);
    for (let trialId = 0; trialId < 4; trialId++) {
      emitTrial(session, { runId: 'fb', trialId, stimulusId: LABELS[trialId], candidates: LABELS, trueRank: (trialId % 3) + 1, previewSteps: 2, image: jpeg });
    }
    session.emit({ type: 'run-end', runId: 'fb', volumesReceived: 40, endedAtMs: 0 });
    await client.waitFor(() => client.json('run-end').length === 1, 'run-end');
    await everything.waitFor(() => everything.json('run-end').length === 1, 'run-end');
    await silent.waitFor(() => silent.json('run-end').length === 1, 'run-end');

    const decoded = client.json('decoded');
    assert.deepEqual(decoded.map((d) => d.trialId), [0, 1, 2, 3]);
    assert.deepEqual(decoded.map((d) => d.trueRank), [1, 2, 3, 1]);
    const frames = client.json('frame');
    assert.deepEqual(frames.map((f) => `${f.trialId}:${f.kind}`), ['0:low-level', '0:final', '1:low-level', '1:final', '2:low-level', '2:final', '3:low-level', '3:final']);
    assert.equal(Buffer.from(frames[1].imageBase64 as string, 'base64').length, jpeg.length);
    const seqs = client.json().map((m) => m.seq as number);
    assert.deepEqual(seqs, seqs.map((_, n) => n + 1));
    for (const message of client.json()) {
      assert.ok(validateOutput(message), `${message.type}: ${JSON.stringify(validateOutput.errors)}`);
      assert.equal(typeof message.serverTimeMs, 'number');
      assert.ok(Math.abs((message.wallTimeMs as number) - Date.now()) < 60_000);
    }
    assert.equal(everything.json('frame').length, 4 * 4);
    assert.ok(everything.json('frame').every((f) => f.imageBase64 === undefined));
    assert.deepEqual(silent.json().map((m) => m.type), ['hello', 'ack', 'run-info', 'run-end']);
    for (const c of [client, everything, silent]) c.close();
  });
});

describe('feedback example client frames', () => {
  test('client prints final frames with their size', async () => {
    const session = new TestSession();
    const handle = await startDashboard(session, { host: '127.0.0.1', port: 0, token: TOKEN });
    try {
      const jpeg = await noiseJpeg(8, 64);
      let started = false;
      const result = await runClient(['--url', feedbackUrl(handle), '--frames', 'final', '--timeout-sec', '20'], (stderr) => {
        if (started || !stderr.includes('subscribe accepted')) return;
        started = true;
        session.emit({ type: 'run-info', runId: 'frames', trSec: 2, shape: [2, 2, 2], affine: new Float64Array(16), source: 'test', motionCorrection: false, trials: [] });
        for (let trialId = 0; trialId < 2; trialId++) {
          emitTrial(session, { runId: 'frames', trialId, stimulusId: LABELS[trialId], candidates: LABELS, trueRank: 1, previewSteps: 2, image: jpeg });
        }
        session.emit({ type: 'run-end', runId: 'frames', volumesReceived: 10, endedAtMs: 0 });
      });
      assert.equal(result.code, 0, result.stderr);
      const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      assert.deepEqual(lines.map((l) => `${l.type}:${l.trialId}:${l.kind ?? ''}`), [
        'trial-result:0:', 'frame:0:low-level', 'frame:0:final', 'trial-result:1:', 'frame:1:low-level', 'frame:1:final',
      ]);
      assert.ok(lines.filter((l) => l.type === 'frame').every((l) => l.bytes === jpeg.length));
    } finally {
      await handle.close();
    }
  });

  test('invalid frames option is rejected', async () => {
    const result = await runClient(['--frames', 'some']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /invalid --frames "some": expected final, all or none/);
  });
});

describe('feedback example client', () => {
  let session: HaxbyReplaySession;
  let handle: DashboardHandle;
  let reportFile: string;

  before(async () => {
    reportFile = join(mkdtempSync(join(tmpdir(), 'mindeye-feedback-')), 'report.json');
    session = new HaxbyReplaySession({ modelDir: fitHaxbyModel(), reportFile, speed: { kind: 'factor', factor: 100 } });
    handle = await startDashboard(session, { host: '127.0.0.1', port: 0, token: TOKEN });
  });

  after(async () => {
    await handle.close();
  });

  test('wrong token makes the client exit with the reason', async () => {
    const result = await runClient(['--url', feedbackUrl(handle), '--token', 'wrong-token-0000', '--timeout-sec', '20']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /connection rejected \(HTTP 403\): .*token given is wrong/);
  });

  test('input without a token makes the client exit 1', async () => {
    const result = await runClient(['--url', feedbackUrl(handle), '--trigger', '--timeout-sec', '2']);
    assert.match(result.stderr, /FEEDBACK_AUTH: "trigger" is input and needs the session token/);
    assert.equal(result.code, 1);
  });

  test('client receives every trial of a replay in order', async () => {
    let started = false;
    const done = runClient(['--url', feedbackUrl(handle), '--token', TOKEN, '--trigger', '--timeout-sec', '30'], (stderr) => {
      // Start the replay once the client is subscribed, so that it receives the whole run.
      if (!started && stderr.includes('subscribe accepted')) {
        started = true;
        session.control.start();
      }
    });
    const result = await done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /trigger accepted/);
    assert.equal(session.inputs.length, 1);
    assert.equal(session.inputs[0].type, 'trigger');

    const results = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as { trials: { trialId: number; stimulusId: string; final?: { retrievalRank?: number } }[] };
    assert.equal(results.length, report.trials.length);
    assert.deepEqual(results.map((r) => r.trialId), report.trials.map((t) => t.trialId));
    assert.deepEqual(results.map((r) => r.stimulusId), report.trials.map((t) => t.stimulusId));
    assert.deepEqual(results.map((r) => r.trueRank), report.trials.map((t) => t.final?.retrievalRank));
    for (let n = 1; n < results.length; n++) {
      assert.ok((results[n].seq as number) > (results[n - 1].seq as number), 'sequence numbers increase');
      assert.ok((results[n].serverTimeMs as number) >= (results[n - 1].serverTimeMs as number), 'server times do not go back');
    }
    for (const r of results) {
      assert.equal(typeof r.receivedWallTimeMs, 'number');
      assert.ok((r.volumeToSendMs as number) >= 0);
      assert.ok(Array.isArray(r.topK), 'topK is a list');
      assert.ok((r.topK as unknown[]).length > 0, 'topK is not empty');
    }
  });
});
