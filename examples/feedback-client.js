#!/usr/bin/env node
// Example client of the mindeye-rt feedback API (docs/feedback-api.md).
//
// Connects to a running session's /feedback WebSocket, prints one JSON line per trial result
// (the final decoded retrieval, with server and client timestamps) on stdout, and optionally
// sends scanner trigger pulses and stimulus onsets the way a stimulus program would.
//
//   node examples/feedback-client.js --url 'ws://127.0.0.1:8080/feedback' --token TOKEN
//   node examples/feedback-client.js --url ... --token ... --trigger --onset face
//
// Options:
//   --url URL         feedback WebSocket URL (default ws://127.0.0.1:8080/feedback)
//   --token T         session token (needed only to send input; also read from MINDEYE_TOKEN)
//   --frames LEVEL    final | all | none: which frames to receive (default none)
//   --trigger         send one trigger pulse after connecting
//   --onset ID        send one stimulus onset with this stimulus id after connecting
//   --keep-open       keep listening after the run ends (default: exit on run-end)
//   --timeout-sec S   exit with status 3 when no message arrives for S seconds (default: wait forever)
//
// Exit status: 0 after run-end, 1 on an error reply to input this client sent, 2 when the
// connection is rejected or lost, 3 on --timeout-sec.
import { parseArgs } from 'node:util';
import WebSocket from 'ws';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8080/feedback' },
    token: { type: 'string', default: process.env.MINDEYE_TOKEN },
    frames: { type: 'string', default: 'none' },
    trigger: { type: 'boolean', default: false },
    onset: { type: 'string' },
    'keep-open': { type: 'boolean', default: false },
    'timeout-sec': { type: 'string' },
  },
});

if (!['final', 'all', 'none'].includes(values.frames)) {
  process.stderr.write(`feedback-client: invalid --frames "${values.frames}": expected final, all or none\n`);
  process.exit(2);
}

const headers = values.token ? { authorization: `Bearer ${values.token}` } : {};
const socket = new WebSocket(values.url, { headers });
let exitCode = 0;
let watchdog;

function log(message) {
  process.stderr.write(`feedback-client: ${message}\n`);
}

function resetWatchdog() {
  if (values['timeout-sec'] === undefined) return;
  clearTimeout(watchdog);
  watchdog = setTimeout(() => {
    log(`no message for ${values['timeout-sec']} s; giving up`);
    if (exitCode === 0) exitCode = 3;
    socket.terminate();
  }, Number(values['timeout-sec']) * 1000);
}

function send(message) {
  socket.send(JSON.stringify({ ...message, clientTimeMs: Date.now() }));
}

socket.on('unexpected-response', (request, response) => {
  let body = '';
  response.on('data', (chunk) => { body += chunk; });
  response.on('end', () => {
    let reason = body;
    try {
      reason = JSON.parse(body).message ?? body;
    } catch {
      // Not JSON: print the body as it came.
    }
    log(`connection rejected (HTTP ${response.statusCode}): ${reason}`);
    process.exit(2);
  });
});

socket.on('open', () => {
  resetWatchdog();
  send({ type: 'subscribe', id: 'subscribe-1', decoded: 'final', frames: values.frames, images: values.frames === 'none' ? 'none' : 'base64' });
  if (values.trigger) send({ type: 'trigger', id: 'trigger-1', pulseIndex: 0 });
  if (values.onset !== undefined) send({ type: 'stimulus-onset', id: 'onset-1', stimulusId: values.onset });
});

socket.on('message', (data, isBinary) => {
  resetWatchdog();
  if (isBinary) return;
  const message = JSON.parse(data.toString('utf8'));
  const receivedWallTimeMs = Date.now();
  switch (message.type) {
    case 'hello':
      log(`connected as client ${message.clientId}; input ${message.canSend ? 'allowed' : 'not allowed (no token)'}${message.simulated ? '; simulated subject' : ''}`);
      break;
    case 'run-info':
      log(`run ${message.runId}: TR ${message.trSec} s, ${message.trials.length} trials in the design`);
      break;
    case 'decoded':
      process.stdout.write(JSON.stringify({
        type: 'trial-result',
        seq: message.seq,
        runId: message.runId,
        trialId: message.trialId,
        stimulusId: message.stimulusId,
        top1: message.topK[0]?.id,
        topK: message.topK,
        trueRank: message.trueRank,
        serverTimeMs: message.serverTimeMs,
        serverWallTimeMs: message.wallTimeMs,
        receivedWallTimeMs,
        volumeToSendMs: message.timing.volumeToSendMs,
      }) + '\n');
      break;
    case 'frame':
      process.stdout.write(JSON.stringify({
        type: 'frame',
        seq: message.seq,
        trialId: message.trialId,
        kind: message.kind,
        provisional: message.provisional,
        bytes: message.imageBase64 === undefined ? 0 : Buffer.from(message.imageBase64, 'base64').length,
        serverWallTimeMs: message.wallTimeMs,
        receivedWallTimeMs,
      }) + '\n');
      break;
    case 'ack':
      log(`${message.inputType} accepted (id ${message.id ?? '-'}, server time ${message.receivedAtMs.toFixed(1)} ms)`);
      break;
    case 'error':
      log(`${message.code}: ${message.message}`);
      exitCode = 1;
      break;
    case 'run-end':
      log(`run ended after ${message.volumesReceived} volumes${message.error ? ` with error: ${message.error}` : ''}`);
      if (!values['keep-open']) socket.close(1000, 'run ended');
      break;
    default:
      break;
  }
});

socket.on('close', (code, reason) => {
  clearTimeout(watchdog);
  if (code !== 1000 && code !== 1005 && exitCode === 0) {
    log(`connection closed (code ${code}${reason.length ? `: ${reason}` : ''})`);
    exitCode = 2;
  }
  process.exit(exitCode);
});

socket.on('error', (err) => {
  log(`connection failed: ${err.message}`);
  process.exitCode = 2;
});
