// Small canvas line charts for the dashboard: axes with ticks, several series, optional
// horizontal reference lines (such as the FD threshold) and a legend. No dependencies.

const AXIS_COLOR = '#6b7480';
const GRID_COLOR = '#2a3039';
const TEXT_COLOR = '#9aa3ad';
const PAD = { left: 44, right: 8, top: 14, bottom: 18 };

/** Resizes the canvas backing store to its CSS size times the device pixel ratio. */
export function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(50, canvas.clientWidth);
  const height = Number(canvas.getAttribute('height')) || 120;
  canvas.style.height = `${height}px`;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

/** Returns about `count` round tick values covering [min, max]. */
export function niceTicks(min, max, count = 4) {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function formatTick(v) {
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 10) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  if (a === 0) return '0';
  return v.toPrecision(2);
}

/**
 * Draws series of [x, y] points.
 * spec: { series: [{ label, color, points }], hLines: [{ y, label, color }], yMin, yMax, xMin, xMax, yLabel }
 */
export function drawLineChart(canvas, spec) {
  const { ctx, width, height } = prepareCanvas(canvas);
  ctx.font = '10px system-ui, sans-serif';
  const legend = layoutLegend(ctx, spec, width);
  const pad = { ...PAD, top: PAD.top + (legend.rows - 1) * 12 };
  const series = spec.series.filter((s) => s.points.length > 0);
  let xMin = spec.xMin ?? Infinity;
  let xMax = spec.xMax ?? -Infinity;
  let yMin = spec.yMin ?? Infinity;
  let yMax = spec.yMax ?? -Infinity;
  for (const s of series) {
    for (const [x, y] of s.points) {
      if (spec.xMin === undefined) xMin = Math.min(xMin, x);
      if (spec.xMax === undefined) xMax = Math.max(xMax, x);
      if (Number.isFinite(y)) {
        if (spec.yMin === undefined) yMin = Math.min(yMin, y);
        if (spec.yMax === undefined) yMax = Math.max(yMax, y);
      }
    }
  }
  for (const line of spec.hLines ?? []) {
    if (spec.yMax === undefined) yMax = Math.max(yMax, line.y * 1.1);
    if (spec.yMin === undefined) yMin = Math.min(yMin, line.y);
  }
  if (!Number.isFinite(xMin) || !Number.isFinite(xMax)) { xMin = 0; xMax = 1; }
  if (!Number.isFinite(yMin) || !Number.isFinite(yMax)) { yMin = 0; yMax = 1; }
  if (xMax === xMin) xMax = xMin + 1;
  if (yMax === yMin) { yMax += 0.5; yMin -= 0.5; }

  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const sx = (x) => pad.left + ((x - xMin) / (xMax - xMin)) * plotW;
  const sy = (y) => pad.top + (1 - (y - yMin) / (yMax - yMin)) * plotH;

  ctx.lineWidth = 1;
  ctx.fillStyle = TEXT_COLOR;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const t of niceTicks(yMin, yMax)) {
    ctx.strokeStyle = GRID_COLOR;
    ctx.beginPath();
    ctx.moveTo(pad.left, sy(t));
    ctx.lineTo(width - pad.right, sy(t));
    ctx.stroke();
    ctx.fillText(formatTick(t), pad.left - 4, sy(t));
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (const t of niceTicks(xMin, xMax, 6)) ctx.fillText(formatTick(t), sx(t), height - pad.bottom + 4);
  ctx.strokeStyle = AXIS_COLOR;
  ctx.strokeRect(pad.left, pad.top, plotW, plotH);

  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.left, pad.top, plotW, plotH);
  ctx.clip();
  for (const line of spec.hLines ?? []) {
    ctx.strokeStyle = line.color;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    ctx.moveTo(pad.left, sy(line.y));
    ctx.lineTo(width - pad.right, sy(line.y));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = 1.4;
    if (s.dots) {
      for (const [x, y] of s.points) ctx.fillRect(sx(x) - 1.5, sy(y) - 1.5, 3, 3);
      continue;
    }
    ctx.beginPath();
    s.points.forEach(([x, y], n) => (n === 0 ? ctx.moveTo(sx(x), sy(y)) : ctx.lineTo(sx(x), sy(y))));
    ctx.stroke();
  }
  ctx.restore();

  // Legend along the top edge, wrapped to more rows when it does not fit.
  ctx.textAlign = 'left';
  ctx.textBaseline = 'top';
  for (const item of legend.items) {
    ctx.fillStyle = item.color;
    ctx.fillRect(item.x, item.y + 1, 8, 8);
    ctx.fillStyle = TEXT_COLOR;
    ctx.fillText(item.label, item.x + 11, item.y);
  }
  if (spec.yLabel) {
    ctx.textAlign = 'right';
    ctx.fillText(spec.yLabel, width - pad.right - 2, legend.yLabelY);
  }
}

/** Places legend entries left to right, wrapping rows so that they do not reach the y label. */
function layoutLegend(ctx, spec, width) {
  const entries = [...spec.series.map((s) => ({ label: s.label, color: s.color })), ...(spec.hLines ?? [])];
  const labelWidth = spec.yLabel ? ctx.measureText(spec.yLabel).width + 12 : 0;
  const items = [];
  let x = PAD.left + 4;
  let row = 0;
  for (const entry of entries) {
    const w = ctx.measureText(entry.label).width + 22;
    const limit = row === 0 ? width - PAD.right - labelWidth : width - PAD.right;
    if (x + w > limit && x > PAD.left + 4) {
      row += 1;
      x = PAD.left + 4;
    }
    items.push({ ...entry, x, y: 1 + row * 12 });
    x += w;
  }
  return { items, rows: row + 1, yLabelY: 1 };
}
