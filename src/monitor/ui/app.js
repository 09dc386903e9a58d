'use strict';
// PostgreSQL pod monitor page: polls the bg_mon-compatible snapshot at `/`.

const POLL_MS = 1000;
const WINDOW_MS = 10 * 60 * 1000; // charts show the last 10 minutes
const MAX_POINTS = 600;
const GAP_MS = 15000; // break chart lines across longer gaps

const $ = (id) => document.getElementById(id);

// ---------- formatting ----------

function fmtNum(v, digits = 1) {
  return v == null || !isFinite(v) ? '—' : Number(v).toFixed(digits);
}

function fmtBytes(b) {
  if (b == null || !isFinite(b)) return '—';
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i === 0 ? String(Math.round(b)) : b.toFixed(b < 10 ? 1 : 0)) + ' ' + units[i];
}

// Replication lag in seconds; below one second as milliseconds.
const fmtLag = (s) => (s != null && s < 1 ? Math.round(s * 1000) + 'ms' : fmtDuration(s));

const fmtKB = (kb) => (kb == null ? '—' : fmtBytes(kb * 1024));

// Seconds as 4.2s, 42s, 1m05s, 2h03m, 3d04h.
function fmtDuration(s) {
  if (s == null || !isFinite(s)) return '—';
  if (s < 10) return (Math.round(s * 10) / 10).toFixed(1) + 's';
  s = Math.floor(s);
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + pad(s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h' + pad(Math.floor(s / 60) % 60) + 'm';
  return Math.floor(s / 86400) + 'd' + pad(Math.floor(s / 3600) % 24) + 'h';
}

function fmtClock(ms, seconds = true) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return pad(d.getHours()) + ':' + pad(d.getMinutes()) + (seconds ? ':' + pad(d.getSeconds()) : '');
}

// ---------- DOM helpers (textContent only: data is untrusted) ----------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k === 'style') Object.assign(node.style, v);
    else if (k.startsWith('data-') || k === 'title' || k === 'colSpan') node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

const td = (text, cls, title) => el('td', { text: text == null ? '' : String(text), class: cls, title });
const numTd = (text, title) => td(text, 'num', title);

// ---------- charts ----------

class Chart {
  // series: [{label, color, value(point)}]; opts: {format, max(points)}
  constructor(id, series, opts) {
    this.canvas = $(id);
    this.series = series;
    this.opts = opts;
    this.values = [];
    const legend = document.querySelector(`.legend[data-for="${id}"]`);
    for (const s of series) {
      s.valueNode = el('span', { class: 'value' });
      legend.append(el('span', { class: 'item' },
        el('span', { class: 'swatch', style: { backgroundColor: s.color } }),
        el('span', { text: s.label }), s.valueNode));
    }
  }

  draw(points) {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 380, h = c.clientHeight || 160;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const { format } = this.opts;
    const L = 52, R = 8, T = 8, B = 18, pw = w - L - R, ph = h - T - B;

    // Scale: the y axis starts at 0 and ends at a "nice" value.
    let max = this.opts.max ? this.opts.max(points) : 0;
    for (const p of points) for (const s of this.series) max = Math.max(max, s.value(p) || 0);
    const unit = this.opts.unit ? this.opts.unit(max) : 1; // nice steps in this unit
    const step = niceStep((max || 1) / unit / 4) * unit;
    const ymax = Math.max(step, Math.ceil(max / step) * step);
    const tEnd = points.length ? points[points.length - 1].t : Date.now();
    const tStart = tEnd - WINDOW_MS;
    const x = (t) => L + ((t - tStart) / WINDOW_MS) * pw;
    const y = (v) => T + ph - (v / ymax) * ph;

    // Grid and y labels.
    ctx.font = '10px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let v = 0; v <= ymax + step / 2; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = v === 0 ? '#999' : '#e6e6e6';
      ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(L + pw, yy); ctx.stroke();
      ctx.fillStyle = '#666';
      ctx.fillText(format(v), L - 4, yy);
    }
    // Time labels every 2 minutes on the clock.
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const tick = 2 * 60 * 1000;
    for (let t = Math.ceil(tStart / tick) * tick; t <= tEnd; t += tick) {
      const xx = Math.round(x(t)) + 0.5;
      if (xx < L + 16 || xx > L + pw - 16) continue; // keep clear of the axis labels
      ctx.strokeStyle = '#f0f0f0';
      ctx.beginPath(); ctx.moveTo(xx, T); ctx.lineTo(xx, T + ph); ctx.stroke();
      ctx.fillStyle = '#666';
      ctx.fillText(fmtClock(t, false), xx, T + ph + 4);
    }
    ctx.strokeStyle = '#999';
    ctx.beginPath(); ctx.moveTo(L + 0.5, T); ctx.lineTo(L + 0.5, T + ph); ctx.stroke();

    // Lines.
    ctx.save();
    ctx.beginPath(); ctx.rect(L, T - 1, pw, ph + 2); ctx.clip();
    ctx.lineWidth = 1.5;
    ctx.lineJoin = 'round';
    for (const s of this.series) {
      ctx.strokeStyle = s.color;
      ctx.beginPath();
      let prev = null;
      for (const p of points) {
        const v = s.value(p);
        if (v == null || !isFinite(v)) { prev = null; continue; }
        if (prev && p.t - prev.t <= GAP_MS) ctx.lineTo(x(p.t), y(v));
        else ctx.moveTo(x(p.t), y(v));
        prev = p;
      }
      ctx.stroke();
    }
    ctx.restore();

    // Current values in the legend.
    const last = points[points.length - 1];
    for (const s of this.series) s.valueNode.textContent = last ? format(s.value(last)) : '';
  }
}

function niceStep(raw) {
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
}

// Memory axis in MB/GB from kB values.
function fmtMemAxis(kb) {
  if (kb == null) return '—';
  if (kb === 0) return '0';
  if (kb >= 1024 * 1024) return +(kb / 1048576).toFixed(kb >= 10 * 1048576 ? 0 : 1) + ' GB';
  return Math.round(kb / 1024) + ' MB';
}

const charts = [
  new Chart('cpu-chart', [
    { label: 'user', color: '#1f77b4', value: (p) => p.cpu?.user },
    { label: 'system', color: '#ff7f0e', value: (p) => p.cpu?.system },
    { label: 'iowait', color: '#9467bd', value: (p) => p.cpu?.iowait },
  ], { format: (v) => (v == null ? '—' : +v.toFixed(1) + '%'), max: () => 5 }),
  new Chart('load-chart', [
    { label: 'load 1m', color: '#d62728', value: (p) => p.load },
  ], { format: (v) => (v == null ? '—' : String(+v.toFixed(2))), max: () => 0.5 }),
  new Chart('memory-chart', [
    { label: 'used', color: '#2ca02c', value: (p) => p.used },
    { label: 'cached', color: '#8c564b', value: (p) => p.cached },
  ], { format: fmtMemAxis, unit: (max) => (max >= 1048576 ? 1048576 : 1024) }),
];

// ---------- state ----------

const points = []; // chart samples, oldest first
let current = null;
let paused = false;
let pending = false;
let failed = null; // last fetch error, if the latest poll failed

// Keep one bounded chart sample per snapshot.
function record(s) {
  if (!s || typeof s.time !== 'number') return;
  if (points.length && s.time <= points[points.length - 1].t) return;
  const st = s.system_stats || {}, m = st.memory || {};
  points.push({
    t: s.time,
    cpu: st.cpu,
    load: st.load_average?.[0],
    used: m.total != null ? m.total - m.free - m.buffers - m.cached : null,
    cached: m.cached,
  });
  while (points.length > MAX_POINTS || (points.length && points[0].t < s.time - WINDOW_MS)) points.shift();
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  let text = (await r.text()).trim();
  if (text.startsWith('[') && !text.endsWith(']')) text += ']'; // an open minute bucket
  return JSON.parse(text);
}

// ---------- rendering ----------

function render() {
  const s = current;
  if (!s) return;
  renderHeader(s);
  renderSystem(s);
  for (const c of charts) c.draw(points);
  renderReplication(s);
  renderVolumes(s);
  renderProcesses(s);
}

function renderStatus() {
  const b = $('status');
  b.hidden = !paused && !failed;
  b.className = 'badge ' + (paused ? 'paused' : 'stale');
  b.textContent = paused ? 'paused' : failed ? 'stale' : '';
  b.title = failed ? String(failed) : '';
}

function renderHeader(s) {
  const pg = s.postgresql || {};
  $('hostname').textContent = s.hostname || '?';
  document.title = (s.hostname || '') + ' – PostgreSQL monitor';
  const role = $('role');
  role.hidden = !pg.role;
  role.textContent = pg.role === 'master' ? 'primary' : pg.role || '';
  role.className = 'badge role-' + role.textContent;

  const items = [];
  if (pg.version) items.push(['PostgreSQL', pg.version]);
  if (pg.timeline != null) items.push(['timeline', pg.timeline]);
  if (pg.start_time) items.push(['up', fmtDuration(s.time / 1000 - pg.start_time)]);
  const c = pg.connections;
  if (c) items.push(['connections', `${c.active} active / ${c.total} total / ${c.max} max`]);
  if (pg.patroni) {
    const p = pg.patroni;
    items.push(['patroni', [p.state, p.role, p.pause ? 'paused' : null].filter(Boolean).join(', ')]);
  }
  $('summary').replaceChildren(...items.map(([k, v]) =>
    el('div', {}, el('dt', { text: k }), el('dd', { text: String(v) }))));
  $('sample-time').textContent = s.time ? fmtClock(s.time) : '';

  const err = $('pg-error');
  err.hidden = !pg.error;
  err.textContent = pg.error ? 'PostgreSQL is not reachable: ' + pg.error : '';
}

function renderSystem(s) {
  const st = s.system_stats || {}, parts = [];
  if (s.sysname) parts.push(s.sysname);
  if (s.cpu_cores) parts.push(s.cpu_cores + ' cores');
  if (st.uptime != null) parts.push('host up ' + fmtDuration(st.uptime));
  if (st.load_average) parts.push('load ' + st.load_average.map((v) => fmtNum(v, 2)).join(' '));
  if (st.processes) parts.push(`procs ${st.processes.running} running, ${st.processes.blocked} blocked`);
  if (st.ctxt != null) parts.push(st.ctxt + ' ctxt/s');
  if (st.memory) parts.push('memory ' + fmtKB(st.memory.total) + ', dirty ' + fmtKB(st.memory.dirty));
  const cg = s.cgroup;
  if (cg?.memory) {
    const lim = cg.memory.limit >= 2 ** 52 ? 'no limit' : fmtKB(cg.memory.limit);
    parts.push(`cgroup mem ${fmtKB(cg.memory.usage)} / ${lim}` + (cg.memory.oom_kill ? `, ${cg.memory.oom_kill} OOM kills` : ''));
  }
  if (cg?.cpu && cg.cpu.quota > 0) parts.push('cgroup cpu quota ' + cg.cpu.quota / 1e5 + ' cores');
  $('system').textContent = parts.join(' · ');
}

function renderReplication(s) {
  const pg = s.postgresql || {}, wal = pg.wal || {};
  let line = '';
  if (pg.role === 'replica') {
    line = `receive ${fmtNum(wal.receive, 0)} kB/s · replay ${fmtNum(wal.replay, 0)} kB/s`;
    if (wal.replay_timestamp && wal.replay_timestamp > 946684800) {
      const ago = Math.max(0, s.time / 1000 - wal.replay_timestamp);
      const at = ago < 86400 ? fmtClock(wal.replay_timestamp * 1000) : new Date(wal.replay_timestamp * 1000).toLocaleString();
      line += ` · last replayed commit ${at} (${fmtDuration(ago)} ago)`;
    } else line += ' · nothing replayed yet';
    if (wal.replay_paused) line += ' · REPLAY PAUSED';
  } else if (wal.written != null) {
    line = `WAL written ${wal.written} kB/s`;
  }
  $('wal').textContent = line;

  const rows = (pg.replication || []).map((r) => el('tr', {},
    td(r.application_name), td(r.client_addr), td(r.state), td(r.sync_state),
    numTd(r.lag == null ? '—' : fmtBytes(r.lag)), numTd(fmtLag(r.replay_lag))));
  if (!rows.length) {
    const msg = pg.error ? 'unknown (PostgreSQL not reachable)' : 'no replicas streaming from this member';
    rows.push(el('tr', { class: 'empty' }, el('td', { colSpan: 6, text: msg })));
  }
  $('replication').tBodies[0].replaceChildren(...rows);
}

function renderVolumes(s) {
  const rows = [];
  for (const kind of ['data', 'wal', 'log']) {
    const v = s.disk_stats?.[kind];
    if (!v) continue;
    const sp = v.device?.space || {}, io = v.device?.io || {};
    const pct = sp.total ? (100 * sp.left) / sp.total : null;
    const left = el('td', { class: 'num' + (pct != null && pct < 10 ? ' warn' : '') });
    left.textContent = sp.total ? `${fmtKB(sp.left)} (${pct.toFixed(0)}%)` : '—';
    rows.push(el('tr', {},
      td(kind, 'kind'), td(v.device?.name), numTd(fmtKB(sp.total)), left,
      numTd(v.directory?.size ? fmtKB(v.directory.size) : '—'),
      numTd(fmtNum(io.read)), numTd(fmtNum(io.write)),
      numTd(io.util == null ? '—' : fmtNum(io.util) + '%', io.await != null ? `await ${io.await} ms` : null),
      td(v.directory?.name, 'path', v.directory?.name)));
  }
  $('volumes').tBodies[0].replaceChildren(...rows);
}

// Order: blocked rows (and parallel workers) right after their parent,
// everything else by age (oldest first, no age last), then pid.
function orderProcesses(list) {
  const byPid = new Map(list.map((p) => [p.pid, p]));
  const parentOf = (p) => {
    const parent = p.locked_by?.length ? p.locked_by[0] : p.parent_pid;
    return parent != null && parent !== p.pid && byPid.has(parent) ? parent : null;
  };
  const cmp = (a, b) =>
    (a.age == null) - (b.age == null) || (b.age ?? 0) - (a.age ?? 0) || a.pid - b.pid;
  const children = new Map();
  for (const p of list) {
    const parent = parentOf(p);
    if (parent != null) (children.get(parent) || children.set(parent, []).get(parent)).push(p);
  }
  const out = [], seen = new Set();
  const walk = (p, depth) => {
    if (seen.has(p.pid)) return;
    seen.add(p.pid);
    out.push({ p, depth });
    for (const c of (children.get(p.pid) || []).sort(cmp)) walk(c, depth + 1);
  };
  list.filter((p) => parentOf(p) == null).sort(cmp).forEach((p) => walk(p, 0));
  list.filter((p) => !seen.has(p.pid)).sort(cmp).forEach((p) => walk(p, 0)); // lock cycles
  return out;
}

function renderProcesses(s) {
  const list = s.processes || [];
  const blockers = new Set(list.flatMap((p) => p.locked_by || []));
  const rows = orderProcesses(list).map(({ p, depth }) => {
    const blocked = p.locked_by?.length > 0;
    const idleTx = p.idle_in_transaction != null || /^idle in transaction/.test(p.query || '');
    const cls = ['process', blocked && 'blocked', idleTx && 'idle-tx', blockers.has(p.pid) && 'blocker',
      depth > 0 && 'nested'].filter(Boolean).join(' ');
    const cpu = p.cpu ? (p.cpu.user || 0) + (p.cpu.system || 0) : null;
    const wait = p.wait_event_type ? p.wait_event_type + ':' + (p.wait_event || '') : '';
    const pidCell = td(p.pid, 'pid');
    if (depth) pidCell.style.paddingLeft = 6 + depth * 14 + 'px';

    const query = el('td', { class: 'query', title: p.query || null });
    if (p.idle_in_transaction != null) {
      query.append(el('span', { class: 'iit', text: `idle in transaction ${fmtDuration(p.idle_in_transaction)}` }),
        p.query ? ' ' + p.query : '');
    } else query.textContent = p.query || '';

    return el('tr', { class: cls, 'data-pid': p.pid },
      pidCell, td((p.locked_by || []).join(', '), 'locked'), td(p.type), td(p.state, 'state'),
      numTd(fmtNum(cpu)), numTd(p.io?.read ?? ''), numTd(p.io?.write ?? ''), numTd(fmtKB(p.uss)),
      numTd(p.age == null ? '' : fmtDuration(p.age)), td(p.database), td(p.username), td(wait, 'wait'), query);
  });
  if (!rows.length) rows.push(el('tr', { class: 'empty' }, el('td', { colSpan: 13, text: 'no processes' })));
  $('processes').tBodies[0].replaceChildren(...rows);
  $('process-count').textContent = list.length ? `(${list.length})` : '';
}

// ---------- polling ----------

async function tick() {
  if (pending) return; // the previous request is still running
  pending = true;
  try {
    const s = await getJSON('/');
    failed = null;
    record(s);
    current = s;
    if (!paused) render();
  } catch (e) {
    failed = e;
  } finally {
    pending = false;
    renderStatus();
  }
}

async function start() {
  pending = true;
  try {
    current = await getJSON('/');
    // Backfill the charts from the last closed minute and the current one.
    const history = [];
    for (const url of ['/prev', '/' + (Math.floor(current.time / 1000) - 1)]) {
      try {
        const a = await getJSON(url);
        if (Array.isArray(a)) history.push(...a);
      } catch { /* no history: fine */ }
    }
    history.filter((h) => h && h.time < current.time).sort((a, b) => a.time - b.time).forEach(record);
    record(current);
    render();
  } catch (e) {
    failed = e;
  } finally {
    pending = false;
    renderStatus();
  }
  setInterval(tick, POLL_MS);
}

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return; // leave browser shortcuts alone
  paused = !paused;
  renderStatus();
  if (!paused) render();
});
window.addEventListener('resize', () => render());

start();
