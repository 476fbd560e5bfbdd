/** `mindeye-rt serve`: decode volumes pushed over a WebSocket at /ingest. */
import Fastify from 'fastify';
import websocket from '@fastify/websocket';
import { DEFAULT_PUSH_QUEUE, pushIngest } from '../ingest/push.ts';
import type { RunReport } from '../session/report.ts';
import { asScannerInput, withDesign } from '../ingest/with-design.ts';
import { PROCESSING_FLAGS, PROCESSING_HELP, SESSION_FLAGS, SESSION_HELP, parseFlags, processingFromFlags, sessionFromFlags } from './flags.ts';
import { DESIGN_FLAGS, DESIGN_HELP, defaultRecordDir, designFromFlags, expectedVolumesFromFlags, sessionToken } from './live-flags.ts';
import { runLiveSession } from './live.ts';
import { EMPTY, takeWhile } from 'rxjs';
import { existingRecord } from '../session/record.ts';
import type { Source } from '../ingest/source.ts';

export const help = `Usage: mindeye-rt serve [--host H] [--port P] [--token T] [--events TSV | --design TSV] [options]

Accepts volumes pushed by a scanner-side computer (\`mindeye-rt push\`, or any program that
speaks the protocol in docs/ingest.md) at ws://HOST:PORT/ingest, one volume per binary message,
and decodes them live. The sender must present the session token (printed at start, or set with
--token). A sender faster than the pipeline is throttled through acknowledgements. The dashboard
shares the port; with --no-dashboard only /ingest is served. The session is recorded to
sessions/<date-time>/ unless --record-to says otherwise.

Resume: started again with the --record-to folder of a session that was interrupted (a crash,
kill -9), serve re-runs the recorded volumes through preprocessing and the GLM, then accepts
pushes from the next volume on. Volumes a sender pushes again are dropped; the report gives
the downtime and the volumes missed. See docs/record.md.

${DESIGN_HELP}

${PROCESSING_HELP}

${SESSION_HELP}
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { ...PROCESSING_FLAGS, ...SESSION_FLAGS, ...DESIGN_FLAGS, 'max-queue': { type: 'string' } }, 'serve');
  const processing = processingFromFlags(values);
  const session = sessionFromFlags(values);
  session.recordTo ??= defaultRecordDir();
  const token = sessionToken(session.token);
  session.token = token;
  const ingest = pushIngest({ token, maxQueue: values['max-queue'] !== undefined ? Number(values['max-queue']) : undefined });
  const pushQueueBound = values['max-queue'] !== undefined ? Number(values['max-queue']) : DEFAULT_PUSH_QUEUE;
  const amendReport = (report: RunReport) => {
    const summary = report.summary as Record<string, unknown>;
    const queues = (summary.queues ?? {}) as Record<string, unknown>;
    summary.queues = { ...queues, push: { bound: pushQueueBound, highWater: ingest.stats().maxQueued } };
  };
  const expected = expectedVolumesFromFlags(values);
  const resumeFrom = existingRecord(session.recordTo);
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
  if (!session.dashboard) {
    const app = Fastify({ logger: false });
    await app.register(websocket, { options: { maxPayload: 256 * 1024 * 1024 } });
    await app.register(ingest.plugin);
    const address = await app.listen({ host: session.host, port: session.port });
    process.stdout.write(`serve: ingest at ${address.replace('http', 'ws')}/ingest (token ${token}); recording to ${session.recordTo}\n`);
    try {
      return await runLiveSession({ source: withDesign(asScannerInput(source), designFromFlags(values)), processing, session, keepServing: false, label: 'serve', resumeFrom, amendReport });
    } finally {
      await app.close();
    }
  }
  process.stdout.write(`serve: ingest at ws://${session.host}:${session.port}/ingest (token ${token}); recording to ${session.recordTo}\n`);
  return runLiveSession({
    source: withDesign(asScannerInput(source), designFromFlags(values)), processing, session, keepServing: false, label: 'serve',
    plugins: [ingest.plugin], resumeFrom, amendReport,
  });
}
