/**
 * The benchmark entry, outside the product: `npm run bench -- [options]` (node dist/bench/main.js).
 * Writes bench/results/latest.{json,md} and the chart, or, with --scaling, multigpu.{json,md}.
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { deviceOption, positiveInt, positiveIntList } from '../src/cli/options.js';
import { parseDevice } from '../src/engine/execution-provider.js';
import type { BenchModelShape } from './bench-models.js';
import { writeReport } from './bench-report.js';
import { type StaticPath, mixedTable, runMixed } from './mixed-bench.js';
import { runScaling } from './scaling-bench.js';
import { BENCH_SECTIONS, type BenchSection, runBench } from './run-bench.js';

interface BenchCliOptions {
  device: string;
  sections: string;
  batches: string;
  repeats: number;
  shape: BenchModelShape;
  workDir: string;
  out: string;
  hfScript?: string;
  queueJobs: number;
  reportOnly?: boolean;
  note?: string[];
  scaling?: boolean;
  gpus: number;
  scalingJobs: number;
  scalingShapes: string;
  scalingWorkers: number[];
  mixedJobs: number;
  slots: number;
  mixedPromptTokens: string;
  mixedNewTokens: string;
  mixedUniformJobs?: number;
  mixedPoissonSeconds: number;
  mixedStatic: string;
  mixedName?: string;
  rowTimeoutS: number;
}

const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);

function range(flag: string, value: string): [number, number] {
  const [lo, hi] = list(value).map(Number);
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo! < 1 || hi! < lo!) throw new Error(`${flag}: expected LO,HI with 1 ≤ LO ≤ HI, got "${value}"`);
  return [lo!, hi!];
}

const program = new Command();
program
  .name('bench')
  .description('measure generation speed (engine, baselines, queue) and write bench/results/latest.{json,md} + chart')
  .addOption(deviceOption().default('cuda:0'))
  .option('--sections <list>', `comma list of ${BENCH_SECTIONS.join(', ')}, mixed (continuous batching, own results file)`, BENCH_SECTIONS.join(','))
  .option('--batches <list>', 'batch sizes for the sweeps', '1,8,32,64,128,256')
  .option('--repeats <n>', 'timed runs per configuration (after 2 warm-ups)', positiveInt('--repeats'), 3)
  .addOption(
    new Option('--shape <shape>', 'shape of the main model (random weights): GPT-2 tiny/small, Llama-3.2-1B, Qwen2.5-0.5B')
      .choices(['tiny', 'demo', 'small', 'llama-3.2-1b', 'qwen2.5-0.5b'])
      .default('small'),
  )
  .option('--work-dir <dir>', 'where random checkpoints and builds go', join(tmpdir(), 'genqueue-bench'))
  .option('--out <dir>', 'results directory', 'bench/results')
  .option('--hf-script <path>', 'HF transformers baseline script (hf_generate_bench.py) to run in the same session')
  .option('--queue-jobs <n>', 'jobs for the queue-e2e rows', positiveInt('--queue-jobs'), 2048)
  .option('--report-only', 'only merge existing section results into latest.json/.md/.svg')
  .option('--note <text...>', 'notes to add to the report')
  .option('--scaling', 'instead: queue throughput with 1..N GPUs × 1 and 2 workers per GPU → multigpu.json/.md')
  .option('--gpus <n>', 'GPUs for --scaling', positiveInt('--gpus'), 1)
  .option('--scaling-jobs <n>', 'jobs per --scaling configuration', positiveInt('--scaling-jobs'), 8192)
  .option('--scaling-shapes <list>', 'GPT-2 shapes for --scaling', 'small,large')
  .option('--scaling-workers <list>', 'workers per GPU for --scaling', positiveIntList('--scaling-workers'), [1, 2])
  .option('--mixed-jobs <n>', 'mixed: jobs per queue row', positiveInt('--mixed-jobs'), 10_000)
  .option('--slots <n>', 'mixed: slots of the continuous batch (and max batch of the static rows)', positiveInt('--slots'), 256)
  .option('--mixed-prompt-tokens <lo,hi>', 'mixed: prompt lengths, log-uniform', '4,512')
  .option('--mixed-new-tokens <lo,hi>', 'mixed: max_new_tokens, log-uniform', '16,512')
  .option('--mixed-uniform-jobs <n>', 'mixed: jobs of the engine-uniform row (default 8 × slots)', positiveInt('--mixed-uniform-jobs'))
  .option('--mixed-poisson-seconds <s>', 'mixed: seconds of Poisson arrivals at 70% of the measured capacity', positiveInt('--mixed-poisson-seconds'), 20)
  .option('--mixed-static <list>', 'mixed: static rows to run (deviceloop, greedysearch)', 'deviceloop,greedysearch')
  .option('--mixed-name <name>', 'mixed: results file <out>/<name>.json (default mixed-<shape>[-cpu])')
  .option('--row-timeout-s <s>', 'mixed: deadline of each row', positiveInt('--row-timeout-s'), 240)
  .action(async (o: BenchCliOptions) => {
    if (o.scaling) {
      await runScaling({
        gpus: o.gpus,
        deviceKind: parseDevice(o.device).kind === 'cpu' ? 'cpu' : 'cuda',
        workersPerGpu: o.scalingWorkers,
        shapes: list(o.scalingShapes) as BenchModelShape[],
        jobs: o.scalingJobs,
        batch: 256,
        workDir: o.workDir,
        outDir: o.out,
        log: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(`wrote ${o.out}/multigpu.json and multigpu.md\n`);
      return;
    }
    let sections = list(o.sections);
    if (sections.includes('mixed')) {
      sections = sections.filter((s) => s !== 'mixed');
      const device = parseDevice(o.device);
      const staticPaths = list(o.mixedStatic);
      const unknownPaths = staticPaths.filter((p) => p !== 'deviceloop' && p !== 'greedysearch');
      if (unknownPaths.length) throw new Error(`--mixed-static: unknown ${unknownPaths.join(', ')}`);
      const name = o.mixedName ?? `mixed-${o.shape}${device.kind === 'cpu' ? '-cpu' : ''}`;
      mkdirSync(o.out, { recursive: true });
      const report = await runMixed({
        device,
        workDir: o.workDir,
        outDir: o.out,
        name,
        shape: o.shape,
        jobs: o.mixedJobs,
        slots: o.slots,
        promptTokens: range('--mixed-prompt-tokens', o.mixedPromptTokens),
        newTokens: range('--mixed-new-tokens', o.mixedNewTokens),
        uniformJobs: o.mixedUniformJobs ?? 8 * o.slots,
        poissonSeconds: o.mixedPoissonSeconds,
        load: 0.7,
        rowTimeoutMs: o.rowTimeoutS * 1000,
        staticPaths: staticPaths as StaticPath[],
        log: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(`${mixedTable(report)}\nwrote ${o.out}/${name}.json\n`);
      if (report.rows.some((r) => r.status !== 'ok')) process.exitCode = 1;
      if (sections.length === 0) return;
    }
    if (!o.reportOnly) {
      const unknown = sections.filter((s) => !(BENCH_SECTIONS as readonly string[]).includes(s));
      if (unknown.length) throw new Error(`--sections: unknown ${unknown.join(', ')}`);
      await runBench({
        device: parseDevice(o.device),
        workDir: o.workDir,
        outDir: o.out,
        sections: sections as BenchSection[],
        batches: list(o.batches).map(Number),
        repeats: o.repeats,
        shape: o.shape,
        hfScript: o.hfScript,
        queueJobs: o.queueJobs,
        log: (line) => process.stderr.write(`${line}\n`),
      });
    }
    const report = writeReport(o.out, o.note ?? []);
    process.stdout.write(`wrote ${o.out}/latest.json, latest.md, tokens-per-second.svg (${report.rows.length} rows, ${report.gpu})\n`);
  });

await program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
// A row that ran past its deadline may leave a thread or a connection behind: the run is over either way.
process.exit(process.exitCode ?? 0);
