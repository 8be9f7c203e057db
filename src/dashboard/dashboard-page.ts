/** The dashboard's single page: it polls /api/status every two seconds and redraws two tables. */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genqueue</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
 table { border-collapse: collapse; margin-bottom: 2em; }
 th, td { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 .big { font-size: 28px; font-weight: 600; }
 .stale { color: #b00; }
</style></head>
<body>
<h1>genqueue</h1>
<p><span class="big" id="tps">–</span> generated tokens/s across the fleet (last minute) · updated <span id="at">–</span></p>
<h2>Queues</h2>
<table id="queues"><thead><tr><th>queue</th><th>waiting</th><th>active</th><th>delayed</th><th>completed</th><th>failed</th></tr></thead><tbody></tbody></table>
<h2>Fleet</h2>
<table id="fleet"><thead><tr><th>worker</th><th>model</th><th>device</th><th>max batch</th><th>jobs done</th><th>failed</th><th>mean batch</th><th>tokens/s (last min)</th><th>tokens/s (graph)</th><th>RSS MiB</th><th>heartbeat</th></tr></thead><tbody></tbody></table>
<script>
const fmt = (n, d = 0) => Number(n).toLocaleString('en-US', { maximumFractionDigits: d });
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
function row(cells) { return '<tr>' + cells.map((c) => '<td>' + c + '</td>').join('') + '</tr>'; }
async function refresh() {
  try {
    const s = await (await fetch('api/status')).json();
    document.getElementById('tps').textContent = fmt(s.tokensPerSecond);
    document.getElementById('at').textContent = new Date(s.at).toLocaleTimeString();
    document.querySelector('#queues tbody').innerHTML = s.queues.map((q) =>
      row([esc(q.name), fmt(q.waiting), fmt(q.active), fmt(q.delayed), fmt(q.completed), fmt(q.failed)])).join('');
    document.querySelector('#fleet tbody').innerHTML = s.fleet.map((m) => {
      const age = (s.at - m.updatedAt) / 1000;
      return row([esc(m.workerId), esc(m.model), esc(m.device), m.maxBatch, fmt(m.stats.jobsCompleted), fmt(m.stats.jobsFailed),
        fmt(m.stats.meanBatchSize, 1), fmt(m.stats.recentTokensPerSecond), fmt(m.stats.tokensPerSecond), fmt(m.rssBytes / 1048576),
        '<span class="' + (age > 10 ? 'stale' : '') + '">' + fmt(age, 1) + ' s ago</span>']);
    }).join('');
  } catch (e) { document.getElementById('at').textContent = 'unreachable: ' + e.message; }
}
refresh(); setInterval(refresh, 2000);
</script>
</body></html>
`;
