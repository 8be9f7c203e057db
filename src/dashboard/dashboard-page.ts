import { CSRF_COOKIE, CSRF_HEADER } from './dashboard-access.js';
import { BOARD_PATH } from './queue-board.js';

/**
 * The fleet page: polls /api/status every two seconds and redraws the headline, the last hour's throughput
 * chart (from the per-minute counts workers publish to Redis, so every dashboard instance draws the same),
 * the queues (with pause/resume, and links into bull-board for their jobs) and the workers.
 */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genqueue</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
 nav a { margin-right: 1.5em; }
 table { border-collapse: collapse; margin-bottom: 2em; }
 th, td { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 .big { font-size: 28px; font-weight: 600; }
 .stale, .error { color: #b00; }
 .paused { color: #a60; font-weight: 600; }
 #chart { border: 1px solid #ddd; background: #fafafa; }
 #chart polyline { fill: none; stroke: #2a6fdb; stroke-width: 2; }
 #chart text { font-size: 11px; fill: #666; }
</style></head>
<body>
<nav><a href="./">Fleet</a><a href="${BOARD_PATH}/">Jobs (bull-board)</a></nav>
<h1>genqueue</h1>
<p><span class="big" id="tps">–</span> generated tokens/s across the fleet (last minute) ·
 <span id="workers">–</span> workers · updated <span id="at">–</span> <span id="error" class="error"></span></p>
<h2>Throughput, last hour (tokens/s per minute)</h2>
<svg id="chart" width="720" height="170" role="img" aria-labelledby="chart-summary"></svg>
<p id="chart-summary">–</p>
<h2>Queues</h2>
<table id="queues"><thead><tr><th>queue</th><th>state</th><th>waiting</th><th>prioritized</th><th>paused</th><th>active</th><th>delayed</th><th>failed</th><th>completed</th><th></th></tr></thead><tbody></tbody></table>
<h2>Fleet</h2>
<p id="no-workers" hidden>No worker has sent a heartbeat in the last 15 s.</p>
<table id="fleet"><thead><tr><th>worker</th><th>model</th><th>device</th><th>slots / max batch</th><th>jobs done</th><th>failed</th><th>mean batch</th><th>tokens/s (last min)</th><th>tokens/s (graph)</th><th>GPU MiB</th><th>RSS MiB</th><th>heartbeat</th></tr></thead><tbody></tbody></table>
<script>
const fmt = (n, d = 0) => Number(n).toLocaleString('en-US', { maximumFractionDigits: d });
const mib = (b) => (b === null || b === undefined ? '–' : fmt(b / 1048576));
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const row = (cells) => '<tr>' + cells.map((c) => '<td>' + c + '</td>').join('') + '</tr>';
const csrf = () => (document.cookie.split('; ').find((c) => c.startsWith('${CSRF_COOKIE}=')) || '').slice(${CSRF_COOKIE.length + 1});

async function act(queue, action) {
  const res = await fetch('api/queues/' + encodeURIComponent(queue) + '/' + action, { method: 'POST', headers: { '${CSRF_HEADER}': csrf() } });
  const failure = res.ok ? '' : action + ' ' + queue + ': ' + (await res.text());
  await refresh();
  document.getElementById('error').textContent = failure;
}

function drawChart(samples, at) {
  const W = 720, H = 170, L = 60, B = 20, T = 10;
  // Tokens/s per minute; the current minute so far over the seconds it has run.
  const rates = samples.map((s) => s.tokens / Math.max(1, Math.min(60, (at - s.at) / 1000)));
  const peak = Math.max(1, ...rates);
  const x = (i) => L + (i * (W - L - 10)) / Math.max(1, samples.length - 1);
  const y = (v) => H - B - (v / peak) * (H - B - T);
  const points = rates.map((v, i) => x(i).toFixed(1) + ',' + y(v).toFixed(1)).join(' ');
  document.getElementById('chart').innerHTML =
    '<polyline points="' + points + '"/>' +
    '<text x="4" y="' + (T + 4) + '">' + fmt(peak) + '</text><text x="4" y="' + (H - B) + '">0</text>' +
    '<text x="' + L + '" y="' + (H - 4) + '">60 min ago</text><text x="' + (W - 40) + '" y="' + (H - 4) + '">now</text>';
  const tokens = samples.reduce((a, s) => a + s.tokens, 0), jobs = samples.reduce((a, s) => a + s.jobs, 0);
  document.getElementById('chart-summary').textContent =
    'Last hour: ' + fmt(tokens) + ' tokens, ' + fmt(jobs) + ' jobs; busiest minute ' + fmt(Math.max(0, ...rates)) + ' tokens/s.';
}

async function refresh() {
  try {
    const res = await fetch('api/status');
    if (!res.ok) throw new Error(await res.text());
    const s = await res.json();
    document.getElementById('error').textContent = '';
    document.getElementById('tps').textContent = fmt(s.tokensPerSecond);
    document.getElementById('workers').textContent = s.fleet.length;
    document.getElementById('at').textContent = new Date(s.at).toLocaleTimeString();
    drawChart(s.throughput, s.at);
    document.querySelector('#queues tbody').innerHTML = s.queues.map((q) => {
      const c = q.counts, name = esc(q.name);
      const action = q.isPaused ? 'resume' : 'pause';
      return row(['<a href="${BOARD_PATH}/queue/' + encodeURIComponent(q.name) + '">' + name + '</a>',
        q.isPaused ? '<span class="paused">paused</span>' : 'running',
        fmt(c.waiting), fmt(c.prioritized), fmt(c.paused), fmt(c.active), fmt(c.delayed), fmt(c.failed), fmt(c.completed),
        '<button data-queue="' + name + '" data-action="' + action + '">' + action + '</button>']);
    }).join('');
    document.getElementById('no-workers').hidden = s.fleet.length > 0;
    document.querySelector('#fleet tbody').innerHTML = s.fleet.map((m) => {
      const age = (s.at - m.updatedAt) / 1000;
      return row([esc(m.workerId), esc(m.model), esc(m.device), m.slots ? fmt(m.slotsInUse ?? 0) + '/' + fmt(m.slots) + ' slots' : m.maxBatch, fmt(m.stats.jobsCompleted), fmt(m.stats.jobsFailed),
        fmt(m.stats.meanBatchSize, 1), fmt(m.stats.recentTokensPerSecond), fmt(m.stats.tokensPerSecond), mib(m.gpuMemoryBytes), mib(m.rssBytes),
        '<span class="' + (age > 10 ? 'stale' : '') + '">' + fmt(age, 1) + ' s ago</span>']);
    }).join('');
  } catch (e) { document.getElementById('error').textContent = 'unreachable: ' + e.message; }
}
document.getElementById('queues').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-action]');
  if (b) act(b.dataset.queue, b.dataset.action);
});
refresh(); setInterval(refresh, 2000);
</script>
</body></html>
`;
