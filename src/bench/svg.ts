/**
 * SVG plots of `mindeye-rt bench`, written as text: one latency histogram per stage, and the
 * timeline of one trial from the volume that closed its window to its final frame. Every bar is
 * a `<rect>` with `data-stage` set, so tests and scripts can read the plots back.
 */

const FONT = 'font-family="sans-serif" font-size="11"';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmt(ms: number): string {
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  return ms.toFixed(2);
}

export interface HistogramInput {
  stage: string;
  valuesMs: number[];
  p50: number;
  p95: number;
}

const PANEL_W = 320;
const PANEL_H = 170;
const BINS = 24;

/** Small multiples: one histogram per stage, linear bins up to the p99, the rest in a last bin. */
export function latencyHistogramsSvg(panels: HistogramInput[], title: string): string {
  const columns = 3;
  const rows = Math.max(1, Math.ceil(panels.length / columns));
  const width = columns * PANEL_W;
  const height = rows * PANEL_H + 30;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="10" y="18" font-size="14">${escapeXml(title)}</text>`,
  ];
  panels.forEach((panel, n) => {
    const x0 = (n % columns) * PANEL_W;
    const y0 = 30 + Math.floor(n / columns) * PANEL_H;
    parts.push(histogramPanel(panel, x0, y0));
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function histogramPanel(panel: HistogramInput, x0: number, y0: number): string {
  const sorted = [...panel.valuesMs].sort((a, b) => a - b);
  const p99 = sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(0.99 * sorted.length) - 1))] ?? 0;
  const top = Math.max(p99 * 1.05, 1e-3);
  const counts = new Array<number>(BINS).fill(0);
  let overflow = 0;
  for (const v of sorted) {
    if (v > top) overflow++;
    else counts[Math.min(BINS - 1, Math.floor((v / top) * BINS))]++;
  }
  const bins = overflow > 0 ? [...counts, overflow] : counts;
  const maxCount = Math.max(1, ...bins);
  const plotX = x0 + 40;
  const plotY = y0 + 24;
  const plotW = PANEL_W - 60;
  const plotH = PANEL_H - 64;
  const barW = plotW / bins.length;
  const stage = escapeXml(panel.stage);
  const out: string[] = [
    `<g data-stage="${stage}">`,
    `<text x="${x0 + 10}" y="${y0 + 14}" font-weight="bold">${stage}</text>`,
    `<text x="${x0 + PANEL_W - 12}" y="${y0 + 14}" text-anchor="end">n=${sorted.length}  p50 ${fmt(panel.p50)}  p95 ${fmt(panel.p95)} ms</text>`,
    `<line x1="${plotX}" y1="${plotY + plotH}" x2="${plotX + plotW}" y2="${plotY + plotH}" stroke="#444"/>`,
  ];
  bins.forEach((count, i) => {
    const h = (count / maxCount) * plotH;
    const from = (i * top) / BINS;
    const label = i === BINS ? `over ${fmt(top)} ms: ${count}` : `${fmt(from)}-${fmt(from + top / BINS)} ms: ${count}`;
    const fill = i === BINS ? '#c0504d' : '#4f81bd';
    out.push(`<rect class="bar" data-stage="${stage}" x="${(plotX + i * barW + 0.5).toFixed(1)}" y="${(plotY + plotH - h).toFixed(1)}" width="${Math.max(0.5, barW - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="${fill}"><title>${label}</title></rect>`);
  });
  for (const [name, value, color] of [['p50', panel.p50, '#2e7d32'], ['p95', panel.p95, '#ef6c00']] as const) {
    if (value > top) continue;
    const x = plotX + (value / top) * BINS * barW;
    out.push(`<line class="${name}" x1="${x.toFixed(1)}" y1="${plotY}" x2="${x.toFixed(1)}" y2="${plotY + plotH}" stroke="${color}" stroke-dasharray="3,2"/>`);
  }
  out.push(`<text x="${plotX}" y="${plotY + plotH + 14}">0</text>`);
  out.push(`<text x="${plotX + BINS * barW}" y="${plotY + plotH + 14}" text-anchor="end">${fmt(top)} ms</text>`);
  out.push(`<text x="${plotX - 4}" y="${plotY + 8}" text-anchor="end">${maxCount}</text>`);
  out.push('</g>');
  return out.join('\n');
}

export interface TimelineSpan {
  stage: string;
  startMs: number;
  endMs: number;
  /** Extra text for the tooltip, such as the volume or step. */
  note?: string;
}

export interface TimelineMarker {
  label: string;
  atMs: number;
}

/**
 * Draws one trial's timeline: a row per stage, with spans in ms from `originMs` (the arrival of
 * the window-closing volume). Vertical markers show betas final, first frame and final frame.
 */
export function trialTimelineSvg(title: string, originMs: number, spans: TimelineSpan[], markers: TimelineMarker[], stageOrder: string[]): string {
  const stages = stageOrder.filter((s) => spans.some((span) => span.stage === s));
  for (const span of spans) if (!stages.includes(span.stage)) stages.push(span.stage);
  const endMs = Math.max(1, ...spans.map((s) => s.endMs - originMs), ...markers.map((m) => m.atMs - originMs));
  const rowH = 18;
  const left = 130;
  const plotW = 820;
  const top = 40;
  const width = left + plotW + 30;
  const height = top + stages.length * rowH + 50;
  const x = (ms: number) => left + ((ms - originMs) / endMs) * plotW;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="10" y="18" font-size="14">${escapeXml(title)}</text>`,
  ];
  stages.forEach((stage, row) => {
    const y = top + row * rowH;
    parts.push(`<text x="${left - 6}" y="${y + 12}" text-anchor="end">${escapeXml(stage)}</text>`);
    parts.push(`<line x1="${left}" y1="${y + rowH - 1}" x2="${left + plotW}" y2="${y + rowH - 1}" stroke="#eee"/>`);
  });
  for (const span of spans) {
    const row = stages.indexOf(span.stage);
    const y = top + row * rowH + 3;
    const w = Math.max(1, x(span.endMs) - x(span.startMs));
    const label = `${span.stage}${span.note ? ` (${span.note})` : ''}: ${fmt(span.startMs - originMs)} to ${fmt(span.endMs - originMs)} ms`;
    parts.push(`<rect class="span" data-stage="${escapeXml(span.stage)}" x="${x(span.startMs).toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="#4f81bd"><title>${escapeXml(label)}</title></rect>`);
  }
  const axisY = top + stages.length * rowH + 4;
  parts.push(`<line x1="${left}" y1="${axisY}" x2="${left + plotW}" y2="${axisY}" stroke="#444"/>`);
  for (let i = 0; i <= 5; i++) {
    const ms = (i * endMs) / 5;
    parts.push(`<text x="${(left + (i * plotW) / 5).toFixed(1)}" y="${axisY + 14}" text-anchor="middle">${fmt(ms)} ms</text>`);
  }
  markers.forEach((marker, i) => {
    const mx = x(marker.atMs).toFixed(1);
    parts.push(`<line class="marker" x1="${mx}" y1="${top - 4}" x2="${mx}" y2="${axisY}" stroke="#c0504d" stroke-dasharray="4,3"/>`);
    parts.push(`<text x="${mx}" y="${top - 8 - (i % 2) * 10}" text-anchor="middle" fill="#c0504d">${escapeXml(marker.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
