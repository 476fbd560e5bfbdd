/** `mindeye-rt serve`: decode volumes pushed over a WebSocket at /ingest. */
import Fastify from 'fastify';
import websocket from '@fastify/websocket';
import { DEFAULT_PUSH_QUEUE, pushIngest } from '../ingest/push.ts';
import type { RunReport } from '../session/report.ts';
import { asScannerInput, withDesign } from '../ingest/with-design.ts';
import { PROCESSING_FLAGS, PROCESSING_HELP, SESSION_FLAGS, SESSION_HELP, parseFlags, processingFromFlags, sessionFromFlags } from './flags.ts';
import { DESIGN_FLAGS, DESIGN_HELP, defaultRecordDir, designFromFlags, expectedVolumesFromFlags, resumedProcessing, sessionToken } from './live-flags.ts';
import { runLiveSession } from './live.ts';
import { EMPTY, takeWhile } from 'rxjs';
import { existingRecord } from '../session/record.ts';
import type { Source } from '../ingest/source.ts';
import type { AddressInfo } from 'node:net';
import { MindeyeError } from '../errors.ts';

export const help = `Usage: mindeye-rt serve [--host H] [--port P] [--token T] [--max-queue N] [--events TSV | --design TSV] [options]

Accepts volumes pushed by a scanner-side computer (\`mindeye-rt push\`, or any program that
speaks the protocol in docs/ingest.md) at ws://HOST:PORT/ingest, one volume per binary message,
and decodes them live. The sender must present the session token (printed at start, or set with
--token). A sender faster than the pipeline is throttled through acknowledgements. The dashboard
shares the port; with --no-dashboard only /ingest is served. The session is recorded to a new
folder sessions/<date-time>/ unless --record-to says otherwise.

Resume: started again with the --record-to folder of a session that was interrupted (a crash,
kill -9), serve re-runs the recorded volumes through preprocessing and the GLM, then accepts
pushes from the next volume on. Volumes a sender pushes again are dropped; the report gives
the downtime and the volumes missed. The recorded processing options and model are kept: a
flag with another value gets a warning. See docs/record.md.

Ingest:
  --max-queue N            volumes received but not yet processed before the server stops
                           reading the socket and acknowledges with ready: false (default ${DEFAULT_PUSH_QUEUE})

${DESIGN_HELP}

${PROCESSING_HELP}

${SESSION_HELP}
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { ...PROCESSING_FLAGS, ...SESSION_FLAGS, ...DESIGN_FLAGS, 'max-queue': { type: 'string' } }, 'serve');
  // Every flag is checked before the record folder is chosen, so a bad command line leaves nothing behind.
  let processing = processingFromFlags(values);
  const session = sessionFromFlags(values);
  const design = designFromFlags(values);
  const expected = expectedVolumesFromFlags(values);
  const pushQueueBound = maxQueueFromFlags(values['max-queue']);
  const token = sessionToken(session.token);
  checkTokenLength(token, session.dashboard);
  session.token = token;
  const freshRecord = session.recordTo === undefined;
  session.recordTo ??= defaultRecordDir();
  // Only a folder named with --record-to is resumed.
  const resumeFrom = freshRecord ? undefined : existingRecord(session.recordTo);
  if (resumeFrom) ({ processing, modelDir: session.modelDir } = resumedProcessing(resumeFrom, argv, processing, session.modelDir, 'serve'));
  const ingest = pushIngest({ token, maxQueue: pushQueueBound });
  const amendReport = (report: RunReport) => {
    const summary = report.summary as Record<string, unknown>;
    const queues = (summary.queues ?? {}) as Record<string, unknown>;
    summary.queues = { ...queues, push: { bound: pushQueueBound, highWater: ingest.stats().maxQueued } };
  };
  const recordedCount = resumeFrom ? Math.max(-1, ...resumeFrom.volumes.map((v) => v.volIdx), ...resumeFrom.gaps) + 1 : 0;
  let source: Source = ingest.source;
  if (expected !== undefined && recordedCount >= expected) {
    // The record already has every expected volume: the session re-runs it and ends.
    source = () => EMPTY;
  } else if (expected !== undefined) {
    // The run ends once that many volumes (or gaps) have passed. After a restart, a sender that
    // starts again at 0, or at the next index (the indices before become gaps), passes them all.
    let resolved = 0;
    source = (ctx) => ingest.source(ctx).pipe(
      takeWhile((e) => {
        if (e.type === 'volume' || e.type === 'gap') resolved++;
        return resolved < expected;
      }, true),
    );
  }
  const live = { source: withDesign(asScannerInput(source), design), processing, session, keepServing: false, label: 'serve', resumeFrom, freshRecord, amendReport };
  const printIngest = (address: string) => {
    process.stdout.write(`serve: ingest at ${address}/ingest (token ${token}); recording to ${session.recordTo}\n`);
  };
  if (!session.dashboard) {
    const app = Fastify({ logger: false });
    await app.register(websocket, { options: { maxPayload: 256 * 1024 * 1024 } });
    await app.register(ingest.plugin);
    await app.listen({ host: session.host, port: session.port });
    printIngest(wsBase(app.server.address() as AddressInfo));
    try {
      return await runLiveSession(live);
    } finally {
      await app.close();
    }
  }
  // The dashboard picks the port (--port 0 chooses a free one), so the ingest address is known once it listens.
  return runLiveSession({ ...live, plugins: [ingest.plugin], onListening: (url) => printIngest(`ws://${new URL(url).host}`) });
}

/** Returns ws://HOST:PORT for the address a server is bound to (IPv6 hosts in brackets). */
function wsBase(address: AddressInfo): string {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `ws://${host}:${address.port}`;
}

function maxQueueFromFlags(value: unknown): number {
  if (value === undefined) return DEFAULT_PUSH_QUEUE;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new MindeyeError('CLI_USAGE', 'Invalid value for --max-queue.', {
      field: '--max-queue', value, expected: 'a positive integer (volumes)', fix: `e.g. --max-queue ${DEFAULT_PUSH_QUEUE}`,
    });
  }
  return n;
}

/** Checks the token the dashboard will require, before the record folder exists (the dashboard checks it again). */
function checkTokenLength(token: string, dashboard: boolean): void {
  if (!dashboard || token.length >= 8) return;
  throw new MindeyeError('CLI_USAGE', 'The session token is too short.', {
    field: '--token', value: `${token.length} characters`, expected: 'at least 8 characters', fix: 'pass a longer --token, or leave it out for a random one',
  });
}
