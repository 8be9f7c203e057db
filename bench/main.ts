/**
 * The benchmark entry, outside the product: `npm run bench -- [options]` (node dist/bench/main.js).
 * Writes bench/results/latest.{json,md} and the chart, or, with --scaling, multigpu.{json,md}.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { deviceOption, positiveInt } from '../src/cli/options.js';
import { parseDevice } from '../src/engine/execution-provider.js';
import type { BenchModelShape } from './bench-models.js';
import { writeReport } from './bench-report.js';
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
}

const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);

const program = new Command();
program
  .name('bench')
  .description('measure generation speed (engine, baselines, queue) and write bench/results/latest.{json,md} + chart')
  .addOption(deviceOption().default('cuda:0'))
  .option('--sections <list>', `comma list of ${BENCH_SECTIONS.join(', ')}`, BENCH_SECTIONS.join(','))
  .option('--batches <list>', 'batch sizes for the sweeps', '1,8,32,64,128,256')
  .option('--repeats <n>', 'timed runs per configuration (after 2 warm-ups)', positiveInt('--repeats'), 3)
  .addOption(
    new Option('--shape <shape>', 'shape of the main model (random weights): GPT-2 tiny/small, Llama-3.2-1B, Qwen2.5-0.5B')
      .choices(['tiny', 'small', 'llama-3.2-1b', 'qwen2.5-0.5b'])
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
  .action(async (o: BenchCliOptions) => {
    if (o.scaling) {
      await runScaling({
        gpus: o.gpus,
        deviceKind: parseDevice(o.device).kind === 'cpu' ? 'cpu' : 'cuda',
        workersPerGpu: [1, 2],
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
    if (!o.reportOnly) {
      const sections = list(o.sections);
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
