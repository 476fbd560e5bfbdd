/**
 * The Markdown report of `mindeye-rt bench` (bench.md): machine, command, budget table, stage
 * and end-to-end latencies, throughput, the realtime segment, peers and links to the plots.
 */
import { versus, type BudgetRow, type ImgCompleteness, type StageRow } from './analysis.ts';
import type { MachineInfo } from './machine.ts';
import type { PeerResult } from './peers.ts';
import type { SoakResult } from './soak.ts';

export interface MarkdownInput {
  /** Long replays back to back (`--soak`), when requested. */
  soak?: SoakResult;
  command: string;
  date: string;
  durationSec: number;
  machine: MachineInfo;
  grid: 'epi' | 'nsd';
  device: string;
  model: string;
  /** False on the nsd grid, where the replay runs without a model (no decodes, no frames). */
  hasModel: boolean;
  volumes: number;
  trialsDecoded: number;
  realtimeFactor?: number;
  throughputVolumesPerSec?: number;
  peakRssMb?: number;
  skipped?: Record<string, number>;
  budgets: BudgetRow[];
  stages: StageRow[];
  endToEnd: StageRow[];
  realtime?: ImgCompleteness & { volumes: number; betaToFinalFrameP95?: number; endToEnd: StageRow[] };
  peers: Record<string, PeerResult>;
  plots: { histograms: string; timeline?: string };
}

function ms(x: number | undefined): string {
  if (x === undefined || Number.isNaN(x)) return '';
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function measured(row: BudgetRow): string {
  if (row.measured === undefined) return 'not measured';
  if (row.unit === 'x real time') return `${row.measured.toFixed(1)}x`;
  if (row.unit === '% of trials') return `${row.measured.toFixed(0)}%`;
  return `${ms(row.measured)} ${row.unit}`;
}

function bar(row: BudgetRow, value: number | undefined): string {
  if (value === undefined) return '';
  const sign = row.direction === 'at most' ? '<=' : '>=';
  if (row.unit === 'x real time') return `${sign} ${value}x`;
  if (row.unit === '% of trials') return `${value}%`;
  return `${sign} ${value} ${row.unit}`;
}

/** Formats the budget table: measured value, bars and the distance to each bar. */
export function budgetTable(budgets: BudgetRow[]): string {
  const lines = [
    '| path | measured | first bar | goal | vs first bar | vs goal |',
    '|---|---|---|---|---|---|',
  ];
  for (const row of budgets) {
    const note = row.note ? ` (${row.note})` : '';
    lines.push(`| ${row.path} | ${measured(row)}${note} | ${bar(row, row.firstBar)} | ${bar(row, row.goal)} | ${versus(row, row.firstBar, 'bar')} | ${versus(row, row.goal, 'goal')} |`);
  }
  return lines.join('\n');
}

function latencyTable(rows: StageRow[], withDescription: boolean): string {
  const lines = [
    `| stage |${withDescription ? ' what it covers |' : ''} n | p50 ms | p95 ms | p99 ms | max ms |`,
    `|---|${withDescription ? '---|' : ''}---|---|---|---|---|`,
  ];
  for (const r of rows) {
    const n = Number.isNaN(r.count) ? '' : String(r.count);
    lines.push(`| ${r.stage} |${withDescription ? ` ${r.description} |` : ''} ${n} | ${ms(r.p50)} | ${ms(r.p95)} | ${ms(r.p99)} | ${ms(r.max)} |`);
  }
  return lines.join('\n');
}

function peerLines(peers: Record<string, PeerResult>): string {
  const lines = ['| peer | ours | peer | peer / ours | same inputs |', '|---|---|---|---|---|'];
  const notes: string[] = [];
  for (const [name, p] of Object.entries(peers)) {
    if (p.skipped !== undefined) {
      notes.push(`- ${name}: skipped, ${p.skipped}`);
      continue;
    }
    const row = peerRow(name, p);
    if (row) lines.push(row);
  }
  return [...(lines.length > 2 ? lines : []), ...(notes.length > 0 ? ['', ...notes] : [])].join('\n');
}

function peerRow(name: string, p: PeerResult): string | undefined {
  const n = (key: string) => p[key] as number | undefined;
  switch (name) {
    case 'numpyGlm':
      return `| numpy ${p.numpyVersion} lstsq, one trial's LSS fit (${p.rows} rows, ${p.designColumns} columns, ${p.voxels} voxels) | ${ms(n('oursUpdateMs'))} ms (online update) | ${ms(n('numpyLstsqMs'))} ms | ${n('ratio')} | betas differ by ${p.betasMaxRelativeDifference} (relative max) |`;
    case 'torchBackbone':
      return `| PyTorch ${p.torchVersion} (${p.torchThreads} thread(s)), ${p.head}, batch 1 | ${ms(n('oursMs'))} ms (onnxruntime) | ${ms(n('torchMs'))} ms | ${n('ratio')} | latents differ by ${p.latentMaxRelativeDifference} (relative max) |`;
    case 'dcm2niix': {
      const ours = p.mindeyePerVolumeMs as { decodeMs: number; decodeAndWriteMs: number } | undefined;
      const theirs = p.dcm2niixPerVolumeMs as { wallMs: number; reportedMs?: number } | undefined;
      if (!ours || !theirs) return undefined;
      return `| dcm2niix ${p.dcm2niixVersion}, Siemens mosaic -> NIfTI, per volume (${p.files} files) | ${ms(ours.decodeAndWriteMs)} ms (decode + write) | ${ms(theirs.wallMs)} ms (whole process) | ${(theirs.wallMs / ours.decodeAndWriteMs).toFixed(2)} | same DICOM files |`;
    }
    case 'nipy': {
      const ours = (p.ours as { msPerVolume?: { p50: number } } | undefined)?.msPerVolume;
      const theirs = (p.nipy as { msPerVolume?: { p50: number } } | undefined)?.msPerVolume;
      if (!ours || !theirs) return undefined;
      return `| nipy rigid registration, real Siemens EPI volumes, per volume (p50) | ${ms(ours.p50)} ms | ${ms(theirs.p50)} ms | ${(theirs.p50 / ours.p50).toFixed(1)} | same volumes and reference |`;
    }
    default:
      return undefined;
  }
}

export function benchMarkdown(input: MarkdownInput): string {
  const m = input.machine;
  const out: string[] = [
    '# mindeye-rt bench',
    '',
    `Command: \`${input.command}\``,
    '',
    `Date: ${input.date}; took ${input.durationSec.toFixed(0)} s.`,
    '',
    `Machine: ${m.cpuModel}, ${m.cpuCores} logical CPUs, ${m.memoryGb} GiB; GPU: ${m.gpu}; Node.js ${m.node}, onnxruntime-node ${m.onnxruntime}, device ${input.device}. `
      + `Load average (1 min) ${m.loadAverageStart.toFixed(2)} at the start and ${m.loadAverageEnd?.toFixed(2) ?? '?'} at the end.`,
    '',
    `Run: the demo's simulated test run on the ${input.grid} grid, motion correction on, model ${input.model}; `
      + `${input.volumes} volumes, ${input.trialsDecoded} trials decoded at max speed.`,
    '',
    '## Budgets',
    '',
    budgetTable(input.budgets),
    '',
    '## Stages (max-speed replay)',
    '',
    'Wall times. A stage that awaits work off the main thread (ingest, decode heads, img2img, encode) also counts the time the event loop spent on other pipeline work before resuming it, so at max speed its tail shows the load of the whole pipeline.',
    '',
    latencyTable(input.stages, true),
    '',
    '## End to end (max-speed replay)',
    '',
    'volume received -> betas final -> first frame -> final frame. At max speed the `latest` policy cuts img2img short when a newer trial has final betas, so the final-frame paths are shorter than at realtime.',
    '',
    latencyTable(input.endToEnd, true),
    '',
    '## Throughput',
    '',
    `- real-time factor ${input.realtimeFactor?.toFixed(1) ?? '?'}x, ${input.throughputVolumesPerSec?.toFixed(1) ?? '?'} volumes/s`,
    `- peak RSS ${input.peakRssMb ?? '?'} MB`,
  ];
  if (input.skipped) out.push(`- skipped under load: ${Object.entries(input.skipped).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  out.push('');
  if (input.realtime) {
    const r = input.realtime;
    let text = `The first ${r.volumes} volumes at realtime speed: ${r.trialsDecoded} trial(s) estimated, without a model (no frames).`;
    if (input.hasModel) {
      text = `The first ${r.volumes} volumes at realtime speed: ${r.trialsDecoded} trial(s) decoded, ${r.trialsWithFullImg2img} with every img2img step, `
        + `${r.trialsFinishedBeforeNextTrial} with their final frame sent before the next trial's final betas`
        + `${r.betaToFinalFrameP95 !== undefined ? `; final betas -> final frame p95 ${ms(r.betaToFinalFrameP95)} ms` : ''}.`;
    }
    out.push('## Realtime segment', '', text, '', latencyTable(r.endToEnd, false), '');
  }
  out.push('## Peers', '', 'Ratios are peer time / our time on the same inputs (above 1: the peer is slower).', '', peerLines(input.peers), '');
  if (input.soak) out.push('## Soak', '', soakLines(input.soak), '');
  out.push('## Plots', '', `- [latency histograms per stage](${input.plots.histograms})`);
  if (input.plots.timeline) out.push(`- [timeline of one trial](${input.plots.timeline})`);
  out.push('');
  return out.join('\n');
}

/** Formats the soak summary: memory and p95 latency in the first and the last run. */
export function soakLines(soak: SoakResult): string {
  const s = soak.summary;
  const lines = [
    `${s.runs} max-speed replays back to back in ${(s.durationSec / 60).toFixed(1)} min (${s.volumes} volumes); memory after each run and a full collection:`,
    '',
    '| memory | first run | last run | max | trend per run |',
    '|---|---|---|---|---|',
    `| RSS (MiB) | ${s.rssMb.first} | ${s.rssMb.last} | ${s.rssMb.max} | ${s.rssMb.slopePerRun} |`,
    `| V8 heap in use (MiB) | ${s.heapUsedMb.first} | ${s.heapUsedMb.last} | ${s.heapUsedMb.max} | ${s.heapUsedMb.slopePerRun} |`,
    '',
    '| p95 (ms) | first run | last run |',
    '|---|---|---|',
  ];
  for (const stage of Object.keys(s.p95Ms.first)) lines.push(`| ${stage} | ${s.p95Ms.first[stage]} | ${s.p95Ms.last[stage] ?? '?'} |`);
  lines.push('', 'Every run is in soak.json (`series`).');
  return lines.join('\n');
}
