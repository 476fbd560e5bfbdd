/**
 * `mindeye-rt push`: the scanner-side sender. Decodes volume files with the watcher's decoders and
 * sends them to a running `serve` over the WebSocket contract of src/ingest/push.ts, keeping at
 * most `--window` volumes unacknowledged so that the server's memory stays bounded.
 */
import { statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { MindeyeError } from '../errors.ts';
import type { VolumeFile } from '../ingest/dicom/index.ts';
import { listFiles, readSeries } from '../ingest/dicom/series.ts';
import { encodePushMessage, type PushAck, type PushDtype } from '../ingest/push.ts';
import { parseFormat, parseNonNegativeInt, storageType } from './convert.ts';

export const help = `mindeye-rt push --url ws://HOST:PORT/ingest --token T [options] FILES...

Sends a series of volumes to a running \`mindeye-rt serve\`. Each FILE is a 3D or 4D NIfTI or a
DICOM or PAR volume file (a folder stands for the files in it); volumes are decoded with the same
decoders as \`watch\`, sent in acquisition order, one WebSocket message each, and acknowledged by
the server when its pipeline has taken them. Prints a summary when every volume is acknowledged.

Options:
  --url URL        WebSocket URL of the server's ingest endpoint (ws://HOST:PORT/ingest). Required.
  --token T        session token printed by \`serve\`, sent as "Authorization: Bearer T". Required.
  --window N       volumes sent ahead of their acknowledgement (default 4)
  --format F       auto (default), siemens, siemens-xa, ge, philips or nifti
  --series N       series number to send when the files hold several
  --tr-sec S       repetition time in seconds, for files that do not record it
  --no-end         do not end the run on the server after the last volume
  -h, --help       show this help
`;

export interface PushSummary {
  sent: number;
  accepted: number;
  rejected: number;
  bytes: number;
  elapsedMs: number;
  errors: string[];
}

export interface PushClientOptions {
  url: string;
  token: string;
  window?: number;
  trSec?: number;
  sendEnd?: boolean;
}

/** Returns the `message` of a JSON error body, or the start of any other body. */
function responseMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === 'string') return parsed.message;
  } catch {
    // Not JSON: a proxy's page or another server; show its start.
  }
  return body.slice(0, 200);
}

/**
 * Opens a WebSocket to the ingest endpoint. Rejects with INGEST_AUTH when the server rejects
 * the token (HTTP 401 missing, 403 wrong) and INGEST_INVALID for any other response.
 */
export function connect(url: string, token: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
    socket.once('open', () => resolve(socket));
    socket.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => { body += chunk.toString(); });
      res.on('end', () => {
        const status = res.statusCode;
        if (status === 401 || status === 403) {
          reject(new MindeyeError('INGEST_AUTH', `The server rejected the session token (HTTP ${status}${status === 401 ? ', no token received' : ', wrong token'}).`, {
            field: '--token', value: responseMessage(body), expected: 'the session token of the running `mindeye-rt serve`',
            fix: 'pass --token with the token that `mindeye-rt serve` printed at start (it changes each session unless serve was started with --token)',
          }));
          return;
        }
        reject(new MindeyeError('INGEST_INVALID', `The server refused the connection (HTTP ${status}).`, {
          field: '--url', value: responseMessage(body), fix: 'check that --url ends in /ingest',
        }));
      });
    });
    socket.once('error', (err) => {
      reject(new MindeyeError('INGEST_INVALID', 'Could not connect to the ingest server.', {
        field: '--url', value: url, expected: 'a running `mindeye-rt serve`', fix: `check host and port (${err.message})`,
      }));
    });
  });
}

/** Returns the smallest wire type that stores the volume's values exactly. */
function wireType(volume: VolumeFile): PushDtype {
  return storageType([volume]);
}

/** Sends volumes in order with a window of unacknowledged messages; resolves when all are acknowledged. */
export async function pushVolumes(volumes: Iterable<VolumeFile>, opts: PushClientOptions): Promise<PushSummary> {
  const socket = await connect(opts.url, opts.token);
  const window = opts.window ?? 4;
  const summary: PushSummary = { sent: 0, accepted: 0, rejected: 0, bytes: 0, elapsedMs: 0, errors: [] };
  const started = performance.now();
  let inflight = 0;
  let wake: (() => void) | undefined;
  let closed: Error | undefined;
  socket.on('message', (raw, isBinary) => {
    if (isBinary) return;
    const ack = JSON.parse(raw.toString()) as PushAck;
    inflight--;
    if (ack.ok) summary.accepted++;
    else {
      summary.rejected++;
      summary.errors.push(`volume ${ack.index ?? '?'}: ${ack.error ?? 'rejected'}`);
    }
    wake?.();
  });
  socket.on('close', (code, reason) => {
    closed = new MindeyeError('INGEST_INVALID', 'The server closed the connection.', {
      field: 'connection', value: `${code} ${reason.toString()}`, fix: 'see the server log',
    });
    wake?.();
  });
  const waitUntil = async (done: () => boolean): Promise<void> => {
    while (!done()) {
      if (closed !== undefined) throw closed;
      await new Promise<void>((resolve) => { wake = resolve; });
      wake = undefined;
    }
  };
  for (const volume of volumes) {
    await waitUntil(() => inflight < window);
    const trSec = volume.trSec > 0 ? volume.trSec : opts.trSec;
    if (trSec === undefined || !(trSec > 0)) {
      throw new MindeyeError('CLI_USAGE', 'The files do not record the repetition time.', {
        file: volume.file, field: '--tr-sec', value: 'absent', fix: 'pass --tr-sec S',
      });
    }
    const message = encodePushMessage(
      { index: volume.volIdx, shape: volume.shape, dtype: wireType(volume), affine: Array.from(volume.affine), trSec },
      volume.data,
    );
    inflight++;
    summary.sent++;
    summary.bytes += message.length;
    socket.send(message);
  }
  await waitUntil(() => inflight === 0);
  if (opts.sendEnd !== false) socket.send(JSON.stringify({ type: 'end' }));
  summary.elapsedMs = performance.now() - started;
  await new Promise<void>((resolve) => {
    socket.once('close', () => resolve());
    socket.close(1000, 'done');
  });
  return summary;
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      token: { type: 'string' },
      window: { type: 'string' },
      format: { type: 'string' },
      series: { type: 'string' },
      'tr-sec': { type: 'string' },
      'no-end': { type: 'boolean' },
    },
  });
  if (values.url === undefined || values.token === undefined || positionals.length === 0) {
    throw new MindeyeError('CLI_USAGE', 'push needs --url, --token and at least one file.', {
      field: 'arguments', value: argv, expected: '--url ws://HOST:PORT/ingest --token T FILES...', fix: 'see mindeye-rt push --help',
    });
  }
  const window = parseNonNegativeInt('--window', values.window) ?? 4;
  if (window < 1) throw new MindeyeError('CLI_USAGE', 'Invalid --window.', { field: '--window', value: window, expected: 'an integer >= 1' });
  const trSec = values['tr-sec'] === undefined ? undefined : Number(values['tr-sec']);
  const files = positionals.flatMap((p) => {
    try {
      return statSync(p).isDirectory() ? listFiles(p) : [p];
    } catch {
      throw new MindeyeError('CLI_USAGE', 'Input file not found.', { file: p, field: 'FILES', value: p, fix: 'check the path' });
    }
  });
  const series = readSeries(files, { format: parseFormat(values.format), series: parseNonNegativeInt('--series', values.series) });
  for (const w of series.warnings) process.stderr.write(`mindeye-rt push: warning (${w.kind}): ${w.message}\n`);
  const summary = await pushVolumes(series.volumes, { url: values.url, token: values.token, window, trSec, sendEnd: !values['no-end'] });
  for (const e of summary.errors) process.stderr.write(`mindeye-rt push: rejected: ${e}\n`);
  const seconds = summary.elapsedMs / 1000;
  process.stdout.write(
    `Sent ${summary.sent} volumes (${(summary.bytes / 1e6).toFixed(1)} MB) to ${values.url} in ${seconds.toFixed(2)} s` +
      ` (${(summary.sent / Math.max(seconds, 1e-9)).toFixed(1)} volumes/s): ${summary.accepted} accepted, ${summary.rejected} rejected\n`,
  );
  return summary.rejected > 0 ? 1 : 0;
}
