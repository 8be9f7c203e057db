import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchRow } from './bench-types.js';
import type { BenchSection, SectionResult } from './run-bench.js';
import type { Measurement } from './search-bench.js';

/** Peak HBM bandwidth by GPU name (bytes/s), for the roofline column. */
function hbmBandwidth(gpu: string): number | undefined {
  if (/H200/.test(gpu)) return 4.8e12;
  if (/H100.*(HBM3|SXM)/.test(gpu)) return 3.35e12;
  if (/H100/.test(gpu)) return 2.0e12;
  return undefined;
}

/** GPT-2 small's shapes, as the benchmark builds them. */
const GPT2_SMALL = { layers: 12, hidden: 768, vocab: 50257, positions: 1024 };

/**
 * Bytes one decode step must move at least: every weight once, the K and V cache read for the context so far,
 * and the logits written and read back for the argmax. A lower bound on time, so an upper bound on tokens/s.
 */
export function rooflineTokensPerSecond(row: BenchRow, gpu: string): number | undefined {
  const bw = hbmBandwidth(gpu);
  // Only for runs that keep a KV cache on the GPU: the no-cache baselines move far more than this model counts.
  if (!/^(ort-ingraph|ort-native|kv-cache|hf-transformers|queue-e2e|opt-)/.test(row.name)) return undefined;
  if (!bw || row.status !== 'ok' || !row.precision || !row.totalTokens || !row.promptTokens) return undefined;
  const { layers: L, hidden: D, vocab: V, positions: P } = GPT2_SMALL;
  const bytes = row.precision === 'fp16' ? 2 : 4;
  const params = V * D + P * D + L * (12 * D * D + 13 * D) + 2 * D;
  const avgContext = (row.promptTokens + row.totalTokens) / 2;
  const perStep = params * bytes + 2 * L * row.batch * avgContext * D * bytes + 2 * row.batch * V * bytes;
  return row.batch / (perStep / bw);
}

export interface BenchReport {
  readonly gpu: string;
  readonly modelShape: string;
  readonly date: string;
  readonly device: string;
  readonly rows: (BenchRow & { rooflineTokensPerSecond?: number; section: BenchSection })[];
  readonly measurements: (Measurement & { section: BenchSection })[];
  readonly notes: string[];
  /** When each section finished: sections run in different leases of the GPU machine say so here. */
  readonly sections: { section: BenchSection; finishedAt: string }[];
}

export function readSections(outDir: string): SectionResult[] {
  const dir = join(outDir, 'parts');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as SectionResult);
}

/** Merges section files (they must come from one GPU) into latest.json, latest.md and tokens-per-second.svg. */
export function writeReport(outDir: string, notes: string[] = []): BenchReport {
  const sections = readSections(outDir);
  if (sections.length === 0) throw new Error(`${outDir}/parts holds no section results`);
  const gpus = [...new Set(sections.map((s) => s.gpu))];
  if (gpus.length > 1) throw new Error(`section results come from different GPUs (${gpus.join(', ')}); rerun them on one`);
  const gpu = gpus[0]!;
  // Several shapes may share a report (their rows carry the shape's prefix); the first section's names the report.
  const modelShape = sections.find((s) => s.modelShape === 'small')?.modelShape ?? sections[0]!.modelShape;
  const report: BenchReport = {
    gpu,
    modelShape,
    date: sections.map((s) => s.finishedAt).sort().at(-1)!.slice(0, 10),
    device: sections[0]!.device,
    rows: sections.flatMap((s) =>
      s.rows.map((r) => {
        // The roofline is computed for GPT-2 small's parameter count only.
        const roof = s.modelShape === 'small' ? rooflineTokensPerSecond(r, gpu) : undefined;
        return { ...r, section: s.section, ...(roof ? { rooflineTokensPerSecond: roof } : {}) };
      }),
    ),
    measurements: sections.flatMap((s) => s.measurements.map((x) => ({ ...x, section: s.section }))),
    notes,
    sections: sections.map((s) => ({ section: s.section, finishedAt: s.finishedAt })),
  };
  writeFileSync(join(outDir, 'latest.json'), `${JSON.stringify(report, null, 1)}\n`);
  writeFileSync(join(outDir, 'latest.md'), renderMarkdown(report));
  writeFileSync(join(outDir, 'tokens-per-second.svg'), renderChart(report));
  return report;
}

const fmt = (x: number | undefined, digits = 3): string => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(digits));

/** How the report names the main model's shape. */
function modelLabel(shape: string): string {
  const names: Record<string, string> = { 'llama-3.2-1b': 'Llama-3.2-1B', 'qwen2.5-0.5b': 'Qwen2.5-0.5B' };
  return `${names[shape] ?? `GPT-2 ${shape}`} shapes`;
}
const tps = (x: number | undefined): string => (x === undefined ? '–' : Math.round(x).toLocaleString('en-US'));

function renderMarkdown(r: BenchReport): string {
  const lines: string[] = [];
  lines.push(`# genqueue benchmark — ${r.gpu} (${r.date})`, '');
  lines.push(`${modelLabel(r.modelShape)}, random weights built by genqueue; prompt "Here is some text to encode Hello World" (8 tokens)`);
  lines.push('→ 256 tokens, greedy, no early stop (min_new_tokens = max_new_tokens), unless a row says otherwise.', '');
  lines.push('## The write-up\'s table, batch 1', '');
  lines.push('| method | s / sequence | new tokens/s |', '| --- | --- | --- |');
  const seedRows = ['hf-transformers', 'ort-naive-nocache', 'ort-argmax-nocache', 'ort-host-kv', 'ort-ingraph-fp32', 'ort-ingraph-fp16', 'ort-native-nograph-fp16', 'ort-native-cudagraph-fp16', 'tensorrt'];
  for (const name of seedRows) {
    const row = r.rows.find((x) => x.name === name && (x.batch === 1 || x.status !== 'ok'));
    if (!row) continue;
    lines.push(
      row.status === 'ok'
        ? `| ${name} | ${fmt(row.secondsPerBatch)} | ${tps(row.newTokensPerSecond)} |`
        : `| ${name} | ${row.status}${row.error ? `: ${row.error.replace(/\|/g, '/')}` : ''} | |`,
    );
  }
  lines.push('', '## Batch sweep (new tokens/s; roofline = HBM-bandwidth upper bound)', '');
  const sweepNames = [...new Set(r.rows.filter((x) => x.status === 'ok' && /^(llama1b-|qwen05b-)?(ort-ingraph|ort-native|hf-transformers)/.test(x.name)).map((x) => x.name))];
  const batches = [...new Set(r.rows.filter((x) => sweepNames.includes(x.name)).map((x) => x.batch))].sort((a, b) => a - b);
  lines.push(`| method | ${batches.map((b) => `bs ${b}`).join(' | ')} |`, `| --- | ${batches.map(() => '---').join(' | ')} |`);
  for (const name of sweepNames) {
    const cells = batches.map((b) => {
      const row = r.rows.find((x) => x.name === name && x.batch === b && x.status === 'ok');
      if (!row) return '–';
      return `${tps(row.newTokensPerSecond)} (${row.msPerStep ? `${fmt(row.msPerStep)} ms/step` : `${fmt(row.secondsPerBatch)} s`})`;
    });
    lines.push(`| ${name} | ${cells.join(' | ')} |`);
  }
  for (const name of sweepNames.filter((n) => n.startsWith('ort-ingraph'))) {
    const cells = batches.map((b) => tps(r.rows.find((x) => x.name === name && x.batch === b)?.rooflineTokensPerSecond));
    lines.push(`| roofline ${name.replace('ort-ingraph-', '')} | ${cells.join(' | ')} |`);
  }
  lines.push('', '## Every row', '');
  lines.push('| section | name | batch | tokens | status | s / batch | ms / step | new tokens/s | roofline tokens/s | GPU MiB | variant / note |');
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const x of r.rows) {
    const detail = [x.variant ? JSON.stringify(x.variant) : '', x.note ?? '', x.error ?? ''].filter(Boolean).join(' ').replace(/\|/g, '/');
    lines.push(
      `| ${x.section} | ${x.name} | ${x.batch} | ${x.promptTokens ?? ''}→${x.totalTokens ?? ''} | ${x.status} | ${fmt(x.secondsPerBatch)} | ${fmt(x.msPerStep)} | ${tps(x.newTokensPerSecond)} | ${tps(x.rooflineTokensPerSecond)} | ${x.gpuMemoryMiB ?? ''} | ${detail} |`,
    );
  }
  lines.push('', '## Measurements', '', '| section | name | value | note |', '| --- | --- | --- | --- |');
  for (const x of r.measurements) lines.push(`| ${x.section} | ${x.name} | ${fmt(x.value)} ${x.unit} | ${x.note ?? ''} |`);
  lines.push('', '## Sections', '', '| section | finished (UTC) |', '| --- | --- |');
  for (const x of r.sections) lines.push(`| ${x.section} | ${x.finishedAt} |`);
  if (r.notes.length) lines.push('', '## Notes', '', ...r.notes.map((n) => `- ${n}`));
  return `${lines.join('\n')}\n`;
}

/** A plain SVG line chart of new tokens/s against batch size (log-log), one line per method. */
function renderChart(r: BenchReport): string {
  const series = new Map<string, { batch: number; tps: number }[]>();
  for (const x of r.rows) {
    if (x.status !== 'ok' || !x.newTokensPerSecond || !/^(llama1b-|qwen05b-)?(ort-ingraph|ort-native-cudagraph|hf-transformers)/.test(x.name)) continue;
    series.set(x.name, [...(series.get(x.name) ?? []), { batch: x.batch, tps: x.newTokensPerSecond }]);
    if (x.rooflineTokensPerSecond && x.name === 'ort-ingraph-fp16') {
      series.set('roofline fp16', [...(series.get('roofline fp16') ?? []), { batch: x.batch, tps: x.rooflineTokensPerSecond }]);
    }
  }
  const W = 820;
  const H = 440;
  const left = 80;
  const bottom = 50;
  const top = 40;
  const right = 190;
  const all = [...series.values()].flat();
  const bx = all.map((p) => Math.log2(p.batch));
  const ty = all.map((p) => Math.log10(p.tps));
  const [x0, x1] = [Math.min(...bx, 0), Math.max(...bx, 1)];
  const [y0, y1] = [Math.floor(Math.min(...ty, 2)), Math.ceil(Math.max(...ty, 3))];
  const px = (b: number): number => left + ((Math.log2(b) - x0) / (x1 - x0 || 1)) * (W - left - right);
  const py = (t: number): number => H - bottom - ((Math.log10(t) - y0) / (y1 - y0 || 1)) * (H - top - bottom);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${left}" y="22" font-size="13">Generated tokens/s vs batch size: ${r.gpu}, ${modelLabel(r.modelShape)}, 8 → 256 tokens</text>`,
  ];
  for (let e = y0; e <= y1; e++) {
    const y = py(10 ** e);
    parts.push(`<line x1="${left}" x2="${W - right}" y1="${y}" y2="${y}" stroke="#ddd"/><text x="${left - 8}" y="${y + 4}" text-anchor="end">1e${e}</text>`);
  }
  for (const b of [...new Set(all.map((p) => p.batch))].sort((a, c) => a - c)) {
    const x = px(b);
    parts.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${H - bottom}" stroke="#eee"/><text x="${x}" y="${H - bottom + 18}" text-anchor="middle">${b}</text>`);
  }
  parts.push(`<text x="${(left + W - right) / 2}" y="${H - 12}" text-anchor="middle">batch size</text>`);
  [...series.entries()].forEach(([name, pts], i) => {
    const c = colors[i % colors.length];
    const sorted = pts.sort((a, b) => a.batch - b.batch);
    const dash = name.startsWith('roofline') ? ' stroke-dasharray="6,4"' : '';
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2"${dash} points="${sorted.map((p) => `${px(p.batch)},${py(p.tps)}`).join(' ')}"/>`);
    for (const p of sorted) parts.push(`<circle cx="${px(p.batch)}" cy="${py(p.tps)}" r="3" fill="${c}"/>`);
    parts.push(`<rect x="${W - right + 15}" y="${top + i * 20}" width="12" height="3" fill="${c}"/><text x="${W - right + 32}" y="${top + i * 20 + 5}">${name}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
