import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchCheckpoint, benchModel, type BenchModelShape } from './bench-models.js';
import type { BenchRow } from './bench-types.js';
import { gpuName } from './gpu-memory.js';
import { multiWorkerRow } from './multi-worker-bench.js';

export interface ScalingOptions {
  /** GPUs to spread workers over (cuda:0 … cuda:gpus-1). */
  readonly gpus: number;
  /** 'cpu' runs the same plan with every worker on the CPU (a smoke run; no scaling meaning). */
  readonly deviceKind: 'cuda' | 'cpu';
  readonly workersPerGpu: readonly number[];
  readonly shapes: readonly BenchModelShape[];
  readonly jobs: number;
  readonly batch: number;
  readonly workDir: string;
  readonly outDir: string;
  readonly log: (line: string) => void;
}

interface ScalingRow extends BenchRow {
  readonly shape: BenchModelShape;
  readonly gpus: number;
  readonly workersPerGpu: number;
  /** Throughput / (GPUs × throughput of one worker on one GPU), same shape. */
  readonly scalingEfficiency?: number;
}

/**
 * Queue throughput with workers spread over GPUs: for each model shape, 1..gpus GPUs × workers per GPU, all on
 * one redis-server, `jobs` jobs of 8 → 256 tokens. Writes multigpu.json and multigpu.md.
 */
export async function runScaling(o: ScalingOptions): Promise<ScalingRow[]> {
  mkdirSync(o.outDir, { recursive: true });
  const gpuCounts = [...new Set([1, 2, 4, 8].filter((n) => n <= o.gpus).concat(o.gpus))].sort((a, b) => a - b);
  const rows: ScalingRow[] = [];
  for (const shape of o.shapes) {
    const ckpt = benchCheckpoint(o.workDir, shape);
    const precision = o.deviceKind === 'cpu' ? 'fp32' : 'fp16'; // ONNX Runtime's CPU kernels here are fp32 only
    await benchModel(o.workDir, ckpt, precision);
    let single: number | undefined;
    for (const gpus of gpuCounts) {
      for (const perGpu of o.workersPerGpu) {
        const devices = Array.from({ length: gpus * perGpu }, (_, i) => (o.deviceKind === 'cpu' ? 'cpu' : `cuda:${i % gpus}`));
        o.log(`scaling ${shape}: ${gpus} GPU(s) × ${perGpu} worker(s)…`);
        const row = await multiWorkerRow({
          model: ckpt,
          cacheDir: join(o.workDir, 'cache'),
          devices,
          precision,
          batch: o.batch,
          jobs: o.jobs,
          shape: { promptTokens: 8, totalTokens: 256 },
          label: `scale-${shape}-${gpus}gpu-${perGpu}w`,
        });
        if (gpus === 1 && perGpu === 1) single = row.newTokensPerSecond;
        const efficiency = single && row.newTokensPerSecond ? row.newTokensPerSecond / (gpus * single) : undefined;
        rows.push({ ...row, shape, gpus, workersPerGpu: perGpu, ...(efficiency ? { scalingEfficiency: efficiency } : {}) });
        o.log(`  ${JSON.stringify(rows.at(-1))}`);
      }
    }
  }
  const gpu = gpuName() ?? 'none';
  // Shapes measured by an earlier call (same GPU) are kept, so long shapes can run in separate calls.
  const previous = join(o.outDir, 'multigpu.json');
  if (existsSync(previous)) {
    const earlier = JSON.parse(readFileSync(previous, 'utf8')) as { gpu: string; rows: ScalingRow[] };
    if (earlier.gpu === gpu) rows.unshift(...earlier.rows.filter((r) => !o.shapes.includes(r.shape)));
  }
  writeFileSync(join(o.outDir, 'multigpu.json'), `${JSON.stringify({ gpu, gpusAvailable: o.gpus, date: new Date().toISOString().slice(0, 10), rows }, null, 1)}\n`);
  const md = [
    `# Queue throughput over GPUs — ${gpu} × ${o.gpus}`,
    '',
    `${o.jobs} jobs of 8 → 256 tokens (${rows[0]?.precision ?? "fp16"}, greedy, no early stop), one redis-server, \`genqueue worker\` processes with max batch ${o.batch}.`,
    'Scaling efficiency = throughput / (GPUs × throughput of one worker on one GPU), per model shape.',
    '',
    '| shape | GPUs | workers per GPU | status | jobs/s | generated tokens/s | scaling efficiency | peak GPU MiB per worker |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.shape} | ${r.gpus} | ${r.workersPerGpu} | ${r.status} | ${r.jobsPerSecond?.toFixed(1) ?? '–'} | ${Math.round(r.newTokensPerSecond ?? 0).toLocaleString('en-US')} | ${r.scalingEfficiency?.toFixed(2) ?? '–'} | ${r.gpuMemoryMiB ?? ''} |`,
    ),
    '',
  ].join('\n');
  writeFileSync(join(o.outDir, 'multigpu.md'), md);
  return rows;
}
