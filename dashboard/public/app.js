// The dashboard page: keeps a mirror of the session state fed by the /stream WebSocket and
// redraws the panels on the next animation frame after a change.
//
// The session token comes from ?token= in the URL printed by mindeye-rt. The page stores it in
// sessionStorage (so that a reload keeps it), removes it from the address bar, and sends it with
// the stream connection and every control request.
import { drawLineChart, prepareCanvas } from './chart.js';

const TOKEN_KEY = 'mindeye-rt-token';
const STAGE_COLORS = ['#5cb3ff', '#f0b429', '#4cc38a', '#ef5b5b', '#c084fc', '#2dd4bf', '#fb923c', '#a3e635', '#f472b6', '#94a3b8'];
const RAD_TO_DEG = 180 / Math.PI;

const token = readToken();
const view = {
  status: { state: '', speed: '', simulated: false, fdThresholdMm: 0.5 },
  run: undefined,
  ended: undefined,
  volumesReceived: 0,
  lastVolIdx: -1,
  motion: [],
  trials: new Map(),
  currentTrialId: undefined,
  latency: {},
  latencySamples: {},
  metrics: { decodedTrials: 0, rankedTrials: 0 },
  warnings: [],
  warningCounts: {},
  /** Object URLs of trial images: trialId -> { lowLevel, preview, final } with header fields. */
  images: new Map(),
  mosaic: undefined,
};

function readToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
    return fromUrl;
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

// ---- connection ----------------------------------------------------------------------------

let retryMs = 500;

function connect() {
  const protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  const socket = new WebSocket(`${protocol}//${location.host}/stream${query}`);
  socket.binaryType = 'arraybuffer';
  socket.addEventListener('open', () => {
    retryMs = 500;
    setConnection(true);
  });
  socket.addEventListener('message', (event) => {
    if (typeof event.data === 'string') handleJson(JSON.parse(event.data));
    else handleBinary(event.data);
  });
  socket.addEventListener('close', (event) => {
    setConnection(false, event.reason);
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  });
}

function setConnection(open, reason) {
  const el = document.getElementById('connection');
  el.textContent = open ? 'live' : 'reconnecting…';
  el.className = `badge ${open ? 'on' : 'off'}`;
  el.dataset.value = open ? 'open' : 'closed';
  el.title = reason || '';
}

// ---- messages ------------------------------------------------------------------------------

function handleJson(msg) {
  switch (msg.type) {
    case 'snapshot':
      applySnapshot(msg);
      break;
    case 'run-info':
      view.run = msg.run;
      for (const trial of msg.trials) view.trials.set(trial.trialId, trial);
      break;
    case 'motion':
      view.motion.push(msg.point);
      break;
    case 'trial':
      if (msg.trial) view.trials.set(msg.trial.trialId, msg.trial);
      if (msg.current && msg.trial) view.currentTrialId = msg.trial.trialId;
      break;
    case 'latency': {
      const samples = (view.latencySamples[msg.stage] ??= []);
      samples.push([msg.key, msg.durationMs]);
      if (samples.length > 500) samples.splice(0, samples.length - 500);
      break;
    }
    case 'warning':
      view.warnings.push(msg.warning);
      if (view.warnings.length > 100) view.warnings.splice(0, view.warnings.length - 100);
      view.warningCounts[msg.warning.kind] = (view.warningCounts[msg.warning.kind] ?? 0) + 1;
      break;
    case 'summary':
      view.volumesReceived = msg.volumesReceived;
      view.lastVolIdx = msg.lastVolIdx;
      view.latency = msg.latency;
      view.metrics = msg.metrics;
      view.warningCounts = msg.warningCounts;
      break;
    case 'status':
      view.status = { ...view.status, ...msg };
      break;
    case 'run-end':
      view.ended = { volumesReceived: msg.volumesReceived, error: msg.error };
      break;
    default:
      break;
  }
  scheduleRender();
}

function applySnapshot(msg) {
  const s = msg.state;
  view.status = msg.status;
  view.run = s.run;
  view.ended = s.ended;
  view.volumesReceived = s.volumesReceived;
  view.lastVolIdx = s.lastVolIdx;
  view.motion = s.motion;
  view.trials = new Map(s.trials.map((t) => [t.trialId, t]));
  view.currentTrialId = s.currentTrialId;
  view.latency = s.latency;
  view.latencySamples = s.latencySamples;
  view.metrics = s.metrics;
  view.warnings = s.warnings;
  view.warningCounts = s.warningCounts;
  for (const slot of view.images.values()) for (const frame of Object.values(slot)) URL.revokeObjectURL(frame.url);
  view.images = new Map();
  galleryRendered.clear();
  document.getElementById('gallery').replaceChildren();
}

function handleBinary(buffer) {
  const data = new DataView(buffer);
  const headerLength = data.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
  const blob = new Blob([new Uint8Array(buffer, 4 + headerLength)], { type: header.mime });
  const url = URL.createObjectURL(blob);
  if (header.type === 'mosaic') {
    if (view.mosaic) URL.revokeObjectURL(view.mosaic.url);
    view.mosaic = { ...header, url };
  } else if (header.type === 'frame') {
    const slot = view.images.get(header.trialId) ?? {};
    const key = slotKey(header.kind);
    if (slot[key] && !isGalleryImage(header.trialId, slot[key])) URL.revokeObjectURL(slot[key].url);
    slot[key] = { ...header, url };
    view.images.set(header.trialId, slot);
    pruneImages();
  }
  scheduleRender();
}

function slotKey(kind) {
  if (kind === 'low-level') return 'lowLevel';
  if (kind === 'img2img-step') return 'preview';
  return 'final';
}

/** Gallery cards keep their own image URL, so only URLs that no card uses are revoked. */
function isGalleryImage(trialId, frame) {
  return galleryRendered.get(trialId) === frame.url;
}

/** Keeps the images of the newest 60 trials; a displayed image stays visible after its URL is revoked. */
function pruneImages() {
  const ids = [...view.images.keys()].sort((a, b) => a - b);
  for (const id of ids.slice(0, Math.max(0, ids.length - 60))) {
    for (const frame of Object.values(view.images.get(id))) URL.revokeObjectURL(frame.url);
    view.images.delete(id);
  }
}

// ---- controls ------------------------------------------------------------------------------

async function control(action, body) {
  const message = document.getElementById('control-message');
  try {
    const response = await fetch(`/api/control/${action}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body ?? {}),
    });
    const result = await response.json();
    if (!response.ok) {
      message.textContent = result.message ?? `${action} failed (HTTP ${response.status})`;
      return;
    }
    message.textContent = '';
    view.status = { ...view.status, ...result };
    scheduleRender();
  } catch (err) {
    message.textContent = `${action} failed: ${err.message}`;
  }
}

function setupControls() {
  for (const action of ['start', 'pause', 'resume', 'stop']) {
    document.getElementById(`btn-${action}`).addEventListener('click', () => control(action));
  }
  document.getElementById('speed-select').addEventListener('change', (event) => control('speed', { speed: event.target.value }));
  if (!token) {
    for (const el of document.querySelectorAll('#controls button, #controls select')) el.disabled = true;
    document.getElementById('control-message').textContent = 'view only: open the URL with ?token= to control';
  }
}

// ---- rendering -----------------------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  renderHeader();
  renderVolume();
  renderTrial();
  renderRetrievals();
  renderMotion();
  renderTimeline();
  renderMetrics();
  renderLatency();
  renderWarnings();
  renderGallery();
}

function setValue(id, value, text) {
  const el = document.getElementById(id);
  el.dataset.value = value === undefined || value === null ? '' : String(value);
  el.textContent = text;
}

function isSimulated() {
  return Boolean(view.status.simulated || view.run?.simulated);
}

function renderHeader() {
  const run = view.run;
  const parts = run ? [run.runId, run.subject && `sub ${run.subject}`, run.session && `ses ${run.session}`, run.run && `run ${run.run}`].filter(Boolean) : [];
  document.getElementById('run-label').textContent = run ? `${parts.join(' · ')} — ${run.source}` : 'waiting for the session…';
  document.getElementById('simulated-badge').hidden = !isSimulated();
  document.body.classList.toggle('simulated', isSimulated());
  document.querySelector('.simulated-note').hidden = !isSimulated();
  const state = view.status.state || '–';
  setValue('status-state', view.status.state, state);
  document.getElementById('status-speed').textContent = view.status.speed ? `speed ${view.status.speed}` : '';
  const expected = run?.expectedVolumes ? ` / ${run.expectedVolumes}` : '';
  document.getElementById('progress').textContent = run ? `volume ${view.lastVolIdx + 1}${expected}${view.ended ? ' · run ended' : ''}` : '';
  const select = document.getElementById('speed-select');
  const speedValue = view.status.speed?.replace(/x$/, '');
  if (speedValue && document.activeElement !== select && [...select.options].some((o) => o.value === speedValue)) select.value = speedValue;
}

function renderVolume() {
  const img = document.getElementById('mosaic');
  if (view.mosaic && img.dataset.url !== view.mosaic.url) {
    img.src = view.mosaic.url;
    img.dataset.url = view.mosaic.url;
    const flags = view.motion.find((p) => p.volIdx === view.mosaic.volIdx)?.flags ?? view.mosaic.flags;
    document.getElementById('volume-label').textContent = `#${view.mosaic.volIdx}`;
    document.getElementById('volume-flags').textContent =
      `${view.mosaic.slices.length} axial slices${view.mosaic.hasMaskOutline ? ', mask outline in orange' : ''}${flags.length ? ` · flagged: ${flags.join(', ')}` : ''}`;
  }
}

function setImage(figureId, url, placeholder) {
  const figure = document.getElementById(figureId);
  const img = figure.querySelector('img');
  figure.querySelector('.placeholder').textContent = placeholder ?? '–';
  if (!url) {
    img.removeAttribute('src');
    img.classList.remove('loaded');
    return;
  }
  if (img.getAttribute('src') !== url) {
    img.onload = () => img.classList.add('loaded');
    img.onerror = () => img.classList.remove('loaded');
    img.src = url;
  }
}

function currentTrial() {
  return view.currentTrialId === undefined ? undefined : view.trials.get(view.currentTrialId);
}

function renderTrial() {
  const trial = currentTrial();
  const slot = trial ? view.images.get(trial.trialId) ?? {} : {};
  document.getElementById('trial-label').textContent = trial ? `#${trial.trialId} · ${trial.stimulusId}${trial.decoded?.trueRank !== undefined ? ` · true rank ${trial.decoded.trueRank}` : ''}` : '';
  setImage('frame-stimulus', trial?.stimulusId ? `/api/image/stimulus/${encodeURIComponent(trial.stimulusId)}${tokenQuery()}` : undefined, trial ? `no image for "${trial.stimulusId}"` : 'no ground truth');
  setImage('frame-lowlevel', slot.lowLevel?.url);
  setImage('frame-preview', slot.preview?.url);
  setImage('frame-final', slot.final?.url);
  document.querySelector('#frame-preview .step').textContent = slot.preview ? `${slot.preview.step}/${slot.preview.stepCount}` : '';
  const finalFigure = document.getElementById('frame-final');
  finalFigure.dataset.trial = slot.final ? String(slot.final.trialId) : '';
}

function tokenQuery() {
  return token ? `?token=${encodeURIComponent(token)}` : '';
}

function renderRetrievals() {
  const trial = currentTrial();
  const list = document.getElementById('retrieval-list');
  const decoded = trial?.decoded;
  const key = decoded ? `${trial.trialId}:${decoded.final}:${decoded.volIdx}` : '';
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  document.getElementById('retrieval-label').textContent = decoded ? `trial ${trial.trialId}${decoded.final ? '' : ' (progressive)'}` : '';
  const items = (decoded?.topK ?? []).map((hit, n) => {
    const li = document.createElement('li');
    li.dataset.id = hit.id;
    li.dataset.score = String(hit.score);
    li.dataset.rank = String(n + 1);
    if (hit.id === trial.stimulusId) li.classList.add('true');
    const thumb = document.createElement('img');
    thumb.className = 'thumb';
    thumb.alt = '';
    thumb.src = `/api/image/candidate/${encodeURIComponent(hit.id)}${tokenQuery()}`;
    thumb.onerror = () => { thumb.style.visibility = 'hidden'; };
    const middle = document.createElement('div');
    const name = document.createElement('div');
    name.className = 'id';
    name.textContent = `${n + 1}. ${hit.id}`;
    // Bars compare the candidates with each other: the best fills the cell, the worst gets 10%.
    const bar = document.createElement('div');
    bar.className = 'bar';
    const scores = decoded.topK.map((h) => h.score);
    const low = Math.min(...scores);
    const span = Math.max(...scores) - low;
    bar.style.width = `${span > 0 ? 10 + (90 * (hit.score - low)) / span : 100}%`;
    middle.append(name, bar);
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = hit.score.toFixed(3);
    li.append(thumb, middle, score);
    return li;
  });
  list.replaceChildren(...items);
}

function renderMotion() {
  const points = view.motion;
  const threshold = view.status.fdThresholdMm ?? 0.5;
  const series = (index, scale, source) => points.map((p) => [p.volIdx, p[source][index] * scale]);
  drawLineChart(document.getElementById('chart-translation'), {
    yLabel: 'mm',
    series: ['x', 'y', 'z'].map((axis, n) => ({ label: `t${axis}`, color: STAGE_COLORS[n], points: series(n, 1, 'translationMm') })),
  });
  drawLineChart(document.getElementById('chart-rotation'), {
    yLabel: 'deg',
    series: ['x', 'y', 'z'].map((axis, n) => ({ label: `r${axis}`, color: STAGE_COLORS[n + 3], points: series(n, RAD_TO_DEG, 'rotationRad') })),
  });
  drawLineChart(document.getElementById('chart-fd'), {
    yLabel: 'mm',
    yMin: 0,
    series: [{ label: 'FD', color: '#e3e6ea', points: points.map((p) => [p.volIdx, p.fdMm]) }],
    hLines: [{ y: threshold, label: `threshold ${threshold} mm`, color: '#ef5b5b' }],
  });
  const last = points[points.length - 1];
  setValue('motion-last-fd', last?.fdMm, last ? `FD ${last.fdMm.toFixed(3)} mm at volume ${last.volIdx}` : '');
  setValue('motion-count', points.length, String(points.length));
  const over = points.filter((p) => p.fdMm > threshold).length;
  setValue('motion-over', over, String(over));
}

function trialPhase(trial) {
  if (trial.rendered) return 'rendered';
  if (trial.decoded?.final) return 'decoded';
  if (trial.estimate?.final) return 'estimated';
  if (trial.estimate) return 'estimating';
  return 'pending';
}

const PHASE_COLORS = { pending: '#3a424e', estimating: '#7aa6c8', estimated: '#3f7fd1', decoded: '#9b7be0', rendered: '#4cc38a' };

function renderTimeline() {
  const canvas = document.getElementById('chart-timeline');
  const { ctx, width, height } = prepareCanvas(canvas);
  const trials = [...view.trials.values()].filter((t) => Number.isFinite(t.onsetSec)).sort((a, b) => a.onsetSec - b.onsetSec);
  const trSec = view.run?.trSec ?? 1;
  const nowSec = Math.max(0, view.lastVolIdx) * trSec;
  const endSec = Math.max(nowSec, view.run?.expectedVolumes ? view.run.expectedVolumes * trSec : 0, ...trials.map((t) => t.onsetSec + t.durationSec), 1);
  const left = 8;
  const right = width - 8;
  const sx = (sec) => left + (sec / endSec) * (right - left);
  const laneHeight = 34;
  const laneTop = 22;

  ctx.font = '10px system-ui, sans-serif';
  ctx.fillStyle = '#9aa3ad';
  ctx.textBaseline = 'top';
  for (let sec = 0; sec <= endSec; sec += niceStep(endSec)) {
    ctx.fillRect(sx(sec), laneTop + laneHeight + 4, 1, 4);
    const label = `${Math.round(sec)} s`;
    const labelX = Math.min(sx(sec) + 2, width - ctx.measureText(label).width - 2);
    ctx.fillText(label, labelX, laneTop + laneHeight + 8);
  }
  for (const trial of trials) {
    const phase = trialPhase(trial);
    ctx.fillStyle = PHASE_COLORS[phase];
    const x = sx(trial.onsetSec);
    const w = Math.max(2, sx(trial.onsetSec + trial.durationSec) - x);
    ctx.fillRect(x, laneTop, w, laneHeight);
    if (trial.decoded?.final && trial.decoded.trueRank === 1) {
      ctx.fillStyle = '#ffffff';
      ctx.beginPath();
      ctx.arc(x + w / 2, laneTop - 6, 3, 0, Math.PI * 2);
      ctx.fill();
    }
    if (trial.trialId === view.currentTrialId) {
      ctx.strokeStyle = '#ffffff';
      ctx.strokeRect(x - 0.5, laneTop - 0.5, w + 1, laneHeight + 1);
    }
  }
  ctx.fillStyle = '#ef5b5b';
  ctx.fillRect(sx(nowSec), 12, 2, laneTop + laneHeight - 4);

  // Frames per trial as bars below the time axis.
  const maxFrames = Math.max(0, ...trials.map((t) => t.frameCount));
  const barTop = laneTop + laneHeight + 26;
  const barBase = height - 4;
  ctx.fillStyle = '#9aa3ad';
  ctx.fillText(maxFrames === 0 ? 'no frames yet (a model without image heads makes none)' : `frames per trial (max ${maxFrames})`, left, barTop);
  for (const trial of trials) {
    if (trial.frameCount === 0) continue;
    const h = (trial.frameCount / maxFrames) * (barBase - barTop - 14);
    ctx.fillStyle = '#5cb3ff';
    ctx.fillRect(sx(trial.onsetSec), barBase - h, Math.max(2, sx(trial.onsetSec + trial.durationSec) - sx(trial.onsetSec)), h);
  }

  const counts = { pending: 0, estimating: 0, estimated: 0, decoded: 0, rendered: 0 };
  for (const trial of view.trials.values()) counts[trialPhase(trial)] += 1;
  document.getElementById('trial-counts').textContent =
    `${view.trials.size} trials: ${counts.rendered} rendered, ${counts.decoded} decoded, ${counts.estimated} estimated, ${counts.estimating} estimating, ${counts.pending} scheduled`;
}

function niceStep(span) {
  const raw = span / 8;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
}

function formatFraction(value) {
  return value === undefined ? '–' : `${(value * 100).toFixed(1)}%`;
}

function renderMetrics() {
  const m = view.metrics;
  setValue('metric-top1', m.retrievalTop1, m.retrievalTop1 === undefined ? '–' : `${formatFraction(m.retrievalTop1)} (${Math.round(m.retrievalTop1 * m.rankedTrials)}/${m.rankedTrials})`);
  setValue('metric-chance', m.retrievalChance, formatFraction(m.retrievalChance));
  setValue('metric-meanrank', m.meanRank, m.meanRank === undefined ? '–' : m.meanRank.toFixed(2));
  setValue('metric-decoded', m.decodedTrials, String(m.decodedTrials));
  for (const [id, value] of [['metric-pixcorr-low', m.pixCorrLowLevelMean], ['metric-ssim-low', m.ssimLowLevelMean], ['metric-pixcorr', m.pixCorrMean], ['metric-ssim', m.ssimMean]]) {
    setValue(id, value, value === undefined ? 'not provided' : value.toFixed(3));
  }
  const ranks = [...view.trials.values()].filter((t) => t.decoded?.final && t.decoded.trueRank !== undefined).map((t) => [t.trialId, t.decoded.trueRank]);
  // Half a unit of margin on each side keeps the dots at the extremes inside the plot.
  const trialIds = ranks.map(([trialId]) => trialId);
  drawLineChart(document.getElementById('chart-rank'), {
    yLabel: 'true rank',
    yMin: 0.5,
    yMax: Math.max(1, ...ranks.map(([, rank]) => rank)) + 0.5,
    xMin: trialIds.length > 0 ? Math.min(...trialIds) - 0.5 : undefined,
    xMax: trialIds.length > 0 ? Math.max(...trialIds) + 0.5 : undefined,
    series: [{ label: 'rank per trial', color: '#5cb3ff', points: ranks, dots: true }],
  });
}

function renderLatency() {
  const stages = Object.keys(view.latency).sort();
  const series = Object.entries(view.latencySamples).map(([stage, samples], n) => ({
    label: stage,
    color: STAGE_COLORS[stages.indexOf(stage) % STAGE_COLORS.length] ?? STAGE_COLORS[n % STAGE_COLORS.length],
    points: samples.slice(-200).map(([, ms], i, all) => [i - all.length + 1, ms]),
  }));
  drawLineChart(document.getElementById('chart-latency'), { yLabel: 'ms, newest 200', yMin: 0, series });
  const rows = stages.map((stage) => {
    const s = view.latency[stage];
    const tr = document.createElement('tr');
    tr.dataset.stage = stage;
    for (const [cls, value, text] of [['stage', stage, stage], ['p50', s.p50, s.p50.toFixed(1)], ['p95', s.p95, s.p95.toFixed(1)], ['max', s.max, s.max.toFixed(1)], ['count', s.count, String(s.count)]]) {
      const td = document.createElement('td');
      td.className = cls;
      td.dataset.value = String(value);
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  document.querySelector('#latency-table tbody').replaceChildren(...rows);
}

function renderWarnings() {
  const chips = Object.entries(view.warningCounts).map(([kind, count]) => {
    const chip = document.createElement('span');
    chip.className = `chip ${kind}`;
    chip.dataset.kind = kind;
    chip.dataset.value = String(count);
    chip.textContent = `${kind}: ${count}`;
    return chip;
  });
  if (chips.length === 0) {
    const none = document.createElement('span');
    none.className = 'chip';
    none.textContent = 'none so far';
    chips.push(none);
  }
  document.getElementById('warning-counts').replaceChildren(...chips);
  const items = view.warnings.slice(-50).reverse().map((w) => {
    const li = document.createElement('li');
    const where = [w.volIdx !== undefined ? `volume ${w.volIdx}` : '', w.trialId !== undefined ? `trial ${w.trialId}` : ''].filter(Boolean).join(', ');
    li.textContent = `${w.kind}${where ? ` (${where})` : ''}: ${w.message}`;
    return li;
  });
  document.getElementById('warning-list').replaceChildren(...items);
}

/** trialId -> image URL shown in its gallery card. */
const galleryRendered = new Map();

function renderGallery() {
  const gallery = document.getElementById('gallery');
  const done = [...view.trials.values()].filter((t) => t.decoded?.final).sort((a, b) => b.trialId - a.trialId).slice(0, 40);
  for (const trial of done) {
    const slot = view.images.get(trial.trialId) ?? {};
    const frame = slot.final ?? (slot.lowLevel && !slot.lowLevel.provisional ? slot.lowLevel : undefined);
    const url = frame?.url ?? '';
    let card = gallery.querySelector(`.card[data-trial="${trial.trialId}"]`);
    if (card && galleryRendered.get(trial.trialId) === url && card.dataset.rank === String(trial.decoded.trueRank ?? '')) continue;
    if (!card) {
      card = document.createElement('div');
      card.className = 'card';
      card.dataset.trial = String(trial.trialId);
      const newer = [...gallery.children].find((c) => Number(c.dataset.trial) < trial.trialId);
      gallery.insertBefore(card, newer ?? null);
    }
    card.dataset.rank = String(trial.decoded.trueRank ?? '');
    card.dataset.stimulus = trial.stimulusId;
    galleryRendered.set(trial.trialId, url);
    const truth = document.createElement('div');
    const truthImg = document.createElement('img');
    truthImg.alt = `stimulus ${trial.stimulusId}`;
    truthImg.src = `/api/image/stimulus/${encodeURIComponent(trial.stimulusId)}${tokenQuery()}`;
    truthImg.onerror = () => { truth.textContent = trial.stimulusId; };
    truth.append(truthImg);
    const recon = document.createElement('div');
    if (url) {
      const reconImg = document.createElement('img');
      reconImg.alt = `reconstruction of trial ${trial.trialId}`;
      reconImg.src = url;
      recon.append(reconImg);
    } else {
      recon.textContent = trial.decoded.topK[0]?.id ?? 'no image';
    }
    const pair = document.createElement('div');
    pair.className = 'pair';
    pair.append(truth, recon);
    const caption = document.createElement('div');
    caption.className = 'caption';
    const left = document.createElement('span');
    left.textContent = `#${trial.trialId} ${trial.stimulusId}`;
    const right = document.createElement('span');
    const rank = trial.decoded.trueRank;
    right.textContent = rank === undefined ? '' : `rank ${rank}`;
    if (rank === 1) right.className = 'rank1';
    caption.append(left, right);
    card.replaceChildren(pair, caption);
  }
  for (const card of [...gallery.children]) {
    if (!done.some((t) => String(t.trialId) === card.dataset.trial)) card.remove();
  }
}

setupControls();
connect();
window.addEventListener('resize', scheduleRender);
// Exposed for tests and for debugging from the browser console.
window.mindeyeDashboard = view;
