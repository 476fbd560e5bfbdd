/**
 * The anytime-decoding curve: how retrieval and the low-level image improve with the number of
 * volumes acquired since trial onset, from the progressive (non-final) estimates.
 *
 * Definition. Only test trials whose final estimate was decoded count. For each number of
 * volumes k seen in any decode, every such trial contributes the estimate it had after k
 * volumes: its latest decode that used at most k volumes (a final decode wins a tie). A trial
 * whose window closed before k contributes its final estimate. The last point therefore
 * contains every trial's final estimate, and its `retrievalTop1` equals the summary's
 * `retrievalTop1`, because both use the same draws (src/eval/sampling.ts).
 */
import type { Decoded } from '../events.ts';
import { topOneHitRate, type AmongNSettings } from './sampling.ts';

export interface AnytimePoint {
  volumesSinceOnset: number;
  retrievalTop1?: number;
  pixCorrLowLevel?: number;
  /** Trials that contribute to the point. */
  trials: number;
}

/** Key of one decode: a trial can have a provisional and a final decode of the same volume. */
export function decodeKey(d: Pick<Decoded, 'trialId' | 'volIdx' | 'final'>): string {
  return `${d.trialId}:${d.volIdx}:${d.final ? 'final' : 'provisional'}`;
}

export interface AnytimeInput {
  decodes: readonly Decoded[];
  /** True for trials that count (test images whose final estimate was decoded). */
  include(trialId: number): boolean;
  /** Retrieval settings; undefined draws no retrieval (no ranks). */
  retrieval?: AmongNSettings;
  /** Low-level PixCorr of a decode, by decodeKey; missing keys are left out of the mean. */
  pixCorrLowLevel?: ReadonlyMap<string, number>;
}

function mean(values: number[]): number | undefined {
  return values.length === 0 ? undefined : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Builds the curve: one point per number of volumes since onset seen in the decodes. */
export function anytimeCurve(input: AnytimeInput): AnytimePoint[] {
  const byTrial = new Map<number, Decoded[]>();
  for (const d of input.decodes) {
    if (!input.include(d.trialId)) continue;
    const list = byTrial.get(d.trialId) ?? [];
    list.push(d);
    byTrial.set(d.trialId, list);
  }
  for (const list of byTrial.values()) {
    // Stable sort: decodes of equal volume count keep their arrival order, then the final one goes last.
    list.sort((a, b) => a.volumesSinceOnset - b.volumesSinceOnset || Number(a.final) - Number(b.final));
  }
  const counts = [...new Set([...byTrial.values()].flat().map((d) => d.volumesSinceOnset))].sort((a, b) => a - b);

  return counts.map((k) => {
    const hits: number[] = [];
    const pix: number[] = [];
    let trials = 0;
    for (const list of byTrial.values()) {
      const at = latestAtMost(list, k);
      if (at === undefined) continue;
      trials++;
      if (input.retrieval && at.trueRank !== undefined && at.candidateCount !== undefined) {
        hits.push(topOneHitRate({ key: at.trialId, pool: at.candidateCount, better: at.trueRank - 1 }, input.retrieval));
      }
      const p = input.pixCorrLowLevel?.get(decodeKey(at));
      if (p !== undefined && Number.isFinite(p)) pix.push(p);
    }
    const point: AnytimePoint = { volumesSinceOnset: k, trials };
    const top1 = mean(hits);
    if (top1 !== undefined) point.retrievalTop1 = top1;
    const pixMean = mean(pix);
    if (pixMean !== undefined) point.pixCorrLowLevel = pixMean;
    return point;
  });
}

function latestAtMost(sorted: Decoded[], k: number): Decoded | undefined {
  let found: Decoded | undefined;
  for (const d of sorted) {
    if (d.volumesSinceOnset > k) break;
    found = d;
  }
  return found;
}

/** Formats the curve as a Markdown table for the printed summary. */
export function anytimeMarkdown(points: readonly AnytimePoint[], candidates?: number): string {
  const cell = (x: number | undefined, percent: boolean) => {
    if (x === undefined) return '';
    return percent ? `${(x * 100).toFixed(1)}%` : x.toFixed(3);
  };
  const rows = [
    `| volumes since onset | ${points.map((p) => p.volumesSinceOnset).join(' | ')} |`,
    `|---|${points.map(() => '---:').join('|')}|`,
  ];
  if (points.some((p) => p.retrievalTop1 !== undefined)) {
    rows.push(`| retrieval top-1${candidates ? ` (N=${candidates})` : ''} | ${points.map((p) => cell(p.retrievalTop1, true)).join(' | ')} |`);
  }
  if (points.some((p) => p.pixCorrLowLevel !== undefined)) {
    rows.push(`| low-level PixCorr | ${points.map((p) => cell(p.pixCorrLowLevel, false)).join(' | ')} |`);
  }
  rows.push(`| trials | ${points.map((p) => p.trials).join(' | ')} |`);
  return rows.join('\n');
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * Draws the curve as a standalone SVG line chart: retrieval top-1 and low-level PixCorr against
 * volumes since onset, with chance (1/N) as a dashed line.
 */
export function anytimeSvg(points: readonly AnytimePoint[], opts: { title: string; chance?: number; trSec?: number }): string {
  const width = 700;
  const height = 400;
  const left = 60;
  const right = 220;
  const top = 40;
  const bottom = 60;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const ks = points.map((p) => p.volumesSinceOnset);
  const kMin = Math.min(...ks);
  const kMax = Math.max(...ks);
  const values = points.flatMap((p) => [p.retrievalTop1, p.pixCorrLowLevel]).filter((v): v is number => v !== undefined);
  const yMin = Math.min(0, Math.floor(Math.min(...values, 0) * 10) / 10);
  const yMax = 1;
  const x = (k: number) => left + (kMax === kMin ? plotW / 2 : ((k - kMin) / (kMax - kMin)) * plotW);
  const y = (v: number) => top + ((yMax - v) / (yMax - yMin)) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="22" font-size="14">${escapeXml(opts.title)}</text>`,
  ];
  for (let v = yMin; v <= yMax + 1e-9; v += 0.1) {
    const yy = y(v).toFixed(1);
    parts.push(`<line x1="${left}" y1="${yy}" x2="${left + plotW}" y2="${yy}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${left - 8}" y="${yy}" text-anchor="end" dominant-baseline="middle">${v.toFixed(1)}</text>`);
  }
  for (const k of ks) {
    const xx = x(k).toFixed(1);
    parts.push(`<line x1="${xx}" y1="${top + plotH}" x2="${xx}" y2="${top + plotH + 5}" stroke="black"/>`);
    parts.push(`<text x="${xx}" y="${top + plotH + 18}" text-anchor="middle">${k}</text>`);
  }
  parts.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="black"/>`);
  const xLabel = opts.trSec ? `volumes since trial onset (1 volume = ${opts.trSec.toFixed(3)} s)` : 'volumes since trial onset';
  parts.push(`<text x="${left + plotW / 2}" y="${height - 18}" text-anchor="middle">${escapeXml(xLabel)}</text>`);

  const series: Array<{ label: string; color: string; dash?: string; values: Array<[number, number]> }> = [
    { label: opts.chance ? `retrieval top-1 (N=${Math.round(1 / opts.chance)})` : 'retrieval top-1', color: '#1f77b4', values: points.filter((p) => p.retrievalTop1 !== undefined).map((p) => [p.volumesSinceOnset, p.retrievalTop1 as number]) },
    { label: 'low-level PixCorr', color: '#ff7f0e', values: points.filter((p) => p.pixCorrLowLevel !== undefined).map((p) => [p.volumesSinceOnset, p.pixCorrLowLevel as number]) },
  ];
  if (opts.chance !== undefined) series.push({ label: `chance (1/${Math.round(1 / opts.chance)})`, color: '#7f7f7f', dash: '5 4', values: [[kMin, opts.chance], [kMax, opts.chance]] });
  let legendY = top + 10;
  for (const s of series) {
    if (s.values.length === 0) continue;
    const path = s.values.map(([k, v]) => `${x(k).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${path}" fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    if (!s.dash) for (const [k, v] of s.values) parts.push(`<circle cx="${x(k).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${s.color}"/>`);
    parts.push(`<line x1="${left + plotW + 12}" y1="${legendY}" x2="${left + plotW + 36}" y2="${legendY}" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    parts.push(`<text x="${left + plotW + 42}" y="${legendY}" dominant-baseline="middle">${escapeXml(s.label)}</text>`);
    legendY += 20;
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
