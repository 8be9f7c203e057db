/**
 * Continuous batching against today's batches on a mixed workload, through the queue, in one run (issue 12 item 6):
 *   engine-uniform           the slot engine alone (its worker thread, no queue): uniform 8 → 256 jobs, S slots;
 *   queue-mixed-continuous   a redis-server, a worker on the slot engine (S slots), a producer on its own thread:
 *                            J jobs, prompts log-uniform in 4-512 tokens, max_new_tokens log-uniform in 16-512
 *                            (seeded), greedy; useful new tokens/s counts each job's own tokens;
 *   queue-mixed-poisson      the same worker, jobs arriving as a Poisson process at `load` × the capacity the row
 *                            above measured: p50/p99 latency and time to first token;
 *   queue-mixed-static       the same jobs through today's batches (worker.engine=batches, max batch S, grouped by
 *                            the power-of-two bucket of max_new_tokens), greedy batches on the device loop;
 *   queue-mixed-static-greedysearch  the same on GreedySearch (--device-loop-max-batch 0).
 * Writes <out>/<name>.json and prints a table. Each row has a deadline; a row that fails says why and the rest run.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load-config.js';
import { type DeviceSpec, formatDevice } from '../src/engine/execution-provider.js';
import { runsDeviceLoop } from '../src/engine/generator.js';
import { ThreadedSlotEngine } from '../src/engine/threaded-slot-engine.js';
import { mulberry32 } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import type { ResolvedModel } from '../src/model/model-cache.js';
import { RedisServerProcess } from '../src/queue/redis-server-process.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { type StartedWorker, startWorker } from '../src/worker/worker-process.js';
import { type BenchModelShape, benchCheckpoint, benchModel } from './bench-models.js';
import { type BenchRow, promptOf } from './bench-types.js';
import { gpuMemoryOf, gpuName } from './gpu-memory.js';
import type { MixedClientInput, MixedClientOutput } from './mixed-client-thread.js';

export type StaticPath = 'deviceloop' | 'greedysearch';

export interface MixedBenchOptions {
  readonly device: DeviceSpec;
  readonly workDir: string;
  readonly outDir: string;
  /** The results file is <outDir>/<name>.json. */
  readonly name: string;
  readonly shape: BenchModelShape;
  readonly jobs: number;
  readonly slots: number;
  /** Log-uniform ranges, inclusive. */
  readonly promptTokens: readonly [number, number];
  readonly newTokens: readonly [number, number];
  /** Jobs of the engine-uniform row (8 → 256 tokens each). */
  readonly uniformJobs: number;
  /** Seconds of Poisson arrivals, and their rate as a fraction of the measured capacity. */
  readonly poissonSeconds: number;
  readonly load: number;
  /** Each row's deadline. */
  readonly rowTimeoutMs: number;
  readonly staticPaths: readonly StaticPath[];
  readonly log: (line: string) => void;
}

export interface MixedReport {
  readonly gpu: string;
  readonly device: string;
  readonly shape: BenchModelShape;
  readonly precision: string;
  readonly date: string;
  readonly slots: number;
  readonly jobs: number;
  readonly mix: Record<string, number>;
  readonly rows: BenchRow[];
  readonly ratios: { continuousOverStatic?: number; continuousOverEngineUniform?: number };
  readonly targets: { continuousOverStatic: 2; continuousOverEngineUniform: 0.8 };
}

/** Words that are one token each in the GPT-2 and Llama 3 vocabularies (after a space). */
const WORDS = [' the', ' of', ' and', ' to', ' in', ' is', ' that', ' for', ' it', ' was', ' on', ' with'];
const MIX_SEED = 20_261_129;

const logUniform = (random: () => number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, Math.round(Math.exp(Math.log(lo) + random() * (Math.log(hi) - Math.log(lo))))));

interface MixedJob {
  readonly prompt: string;
  readonly promptTokens: number;
  readonly maxNewTokens: number;
}

/** The job mix: J prompts of log-uniform length (in tokens, checked with the model's tokenizer) and max_new_tokens. */
async function jobMix(o: MixedBenchOptions, model: ResolvedModel, capacity: number): Promise<MixedJob[]> {
  const random = mulberry32(MIX_SEED);
  const drawn = Array.from({ length: o.jobs }, (_, i) => {
    const n = logUniform(random, o.promptTokens[0], o.promptTokens[1]);
    const prompt = Array.from({ length: n }, (_, k) => WORDS[(i + k) % WORDS.length]).join('');
    return { prompt, maxNewTokens: logUniform(random, o.newTokens[0], o.newTokens[1]) };
  });
  const tokenizer = TextTokenizer.fromModelDir(model.dir, model.manifest.files);
  const ids = await tokenizer.encodeBatch(drawn.map((d) => d.prompt));
  // A prompt the tokenizer makes longer (a BOS token) keeps its max_new_tokens within a slot.
  return drawn.map((d, i) => ({ ...d, promptTokens: ids[i]!.length, maxNewTokens: Math.min(d.maxNewTokens, capacity - ids[i]!.length) }));
}

const percentile = (values: readonly number[], p: number): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
};

/** Settles with the promise, or rejects after ms saying what did not finish. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${Math.round(ms / 1000)} s`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** One producer thread's run; terminated if it outlives the row's deadline. */
async function produce(input: MixedClientInput, deadlineMs: number): Promise<MixedClientOutput> {
  const client = new Worker(new URL('./mixed-client-thread.js', import.meta.url), { workerData: input });
  try {
    return await within(
      new Promise<MixedClientOutput>((resolve, reject) => {
        client.once('message', resolve);
        client.once('error', reject);
        client.once('exit', (code) => reject(new Error(`producer thread exited (${code}) without a result`)));
      }),
      deadlineMs,
      'producer thread',
    );
  } finally {
    await client.terminate();
  }
}

interface QueueRun {
  readonly out: MixedClientOutput;
  readonly row: BenchRow;
}

/** A queue row from a producer run: useful new tokens/s from the first enqueue to the last result read back. */
function queueRow(name: string, o: MixedBenchOptions, precision: string, out: MixedClientOutput, variant: Record<string, string | number | boolean>): BenchRow {
  const ok = out.failed === 0 && out.pending === 0;
  return {
    name,
    batch: o.slots,
    status: ok ? 'ok' : 'failed',
    newTokensPerSecond: out.tokens / out.seconds,
    jobsPerSecond: out.completed / out.seconds,
    precision: precision as 'fp32' | 'fp16',
    variant: {
      jobs: out.completed + out.failed + out.pending,
      p50LatencyMs: Math.round(percentile(out.latencyMs, 0.5)),
      p99LatencyMs: Math.round(percentile(out.latencyMs, 0.99)),
      p50TimeToFirstTokenMs: Math.round(percentile(out.ttftMs, 0.5)),
      p99TimeToFirstTokenMs: Math.round(percentile(out.ttftMs, 0.99)),
      ...variant,
    },
    gpuMemoryMiB: gpuMemoryOf(),
    note: `${out.completed} jobs, ${out.tokens} new tokens in ${out.seconds.toFixed(2)} s (enqueue ${out.enqueueSeconds.toFixed(2)} s)`,
    ...(ok ? {} : { error: `${out.failed} failed, ${out.pending} pending past the deadline${out.firstError ? `; first error: ${out.firstError}` : ''}` }),
  };
}

const failedRow = (name: string, slots: number, e: unknown): BenchRow => ({ name, batch: slots, status: 'failed', error: ((e as Error).stack ?? String(e)).slice(0, 800) });

/** Runs every row, writes <outDir>/<name>.json, and returns the report (the caller prints the table). */
export async function runMixed(o: MixedBenchOptions): Promise<MixedReport> {
  const onGpu = o.device.kind !== 'cpu';
  const precision = onGpu ? 'fp16' : 'fp32';
  const ckpt = benchCheckpoint(o.workDir, o.shape);
  o.log(`mixed: building ${o.shape} (${precision})…`);
  const model = { ...(await benchModel(o.workDir, ckpt, precision)), name: 'bench' };
  // Slots as long as the longest job (a BOS token included; engine-uniform's are 256), in steps of 64, within the
  // context: both slot rows hold the same KV caches, whatever the model's own default.
  const longest = Math.max(256, o.promptTokens[1] + o.newTokens[1] + 1);
  const capacity = Math.min(model.manifest.spec.contextLength, Math.ceil(longest / 64) * 64);
  const mix = await jobMix(o, model, capacity);
  const sum = (f: (j: MixedJob) => number) => mix.reduce((a, j) => a + f(j), 0);
  const rows: BenchRow[] = [];
  const logRow = (r: BenchRow) => {
    rows.push(r);
    o.log(`  ${JSON.stringify(r)}`);
  };
  const defaults = loadConfig({ env: {} });
  const config = { ...defaults, worker: { ...defaults.worker, slotCapacity: capacity } };
  const device = formatDevice(o.device);
  const quiet = pino({ level: 'silent' });

  o.log('mixed: engine-uniform…');
  try {
    logRow(await within(engineUniform(o, model.dir, capacity), o.rowTimeoutMs, 'engine-uniform'));
  } catch (e) {
    logRow(failedRow('engine-uniform', o.slots, e));
  }

  /** A worker on its own redis-server for the rows that use it; closed (with a deadline) whatever happens. */
  const withWorker = async (label: string, options: Parameters<typeof startWorker>[2], body: (redisUrl: string, started: StartedWorker) => Promise<void>): Promise<void> => {
    const redis = await RedisServerProcess.start();
    let started: StartedWorker | undefined;
    try {
      o.log(`mixed: ${label}: starting the worker…`);
      started = await within(startWorker(config, model, { ...options, device, redisUrl: redis.url, workerId: `bench-${label}` }, quiet), o.rowTimeoutMs, `${label} worker start`);
      await body(redis.url, started);
    } finally {
      if (started) await within(started.close(), 60_000, `${label} worker close`).catch((e: unknown) => o.log(`  ${(e as Error).message}`));
      await redis.stop();
    }
  };
  const jobsFor = (prefix: string, jobs: readonly MixedJob[]) => jobs.map((j, i) => ({ id: `${prefix}-${i}`, prompt: j.prompt, maxNewTokens: j.maxNewTokens }));
  const warmupLengths = onGpu ? [o.promptTokens[1] + o.newTokens[1]] : [];

  let continuous: QueueRun | undefined;
  try {
    await withWorker('continuous', { engine: 'slots', slots: o.slots, maxBatch: o.slots, warmupLengths }, async (redisUrl, started) => {
      o.log(`mixed: queue-mixed-continuous (${o.jobs} jobs)…`);
      const out = await produce({ redisUrl, jobs: jobsFor('c', mix), timeoutMs: o.rowTimeoutMs }, o.rowTimeoutMs + 30_000);
      const { slots, chunkSteps, capacity: slotCapacity } = started.slotEngine!.limits;
      const row = queueRow('queue-mixed-continuous', o, precision, out, { slots, chunkSteps, capacity: slotCapacity, engine: 'slots' });
      continuous = { out, row };
      logRow(row);
      if (out.completed === 0) throw new Error('no job completed: no capacity to load the Poisson run with');
      // Capacity from the results' own span (first enqueue to last end), in jobs/s; the Poisson jobs are drawn from the same mix.
      const capacity = out.completed / out.spanSeconds;
      const rate = o.load * capacity;
      const n = Math.max(1, Math.min(o.jobs, Math.ceil(rate * o.poissonSeconds)));
      const random = mulberry32(MIX_SEED + 1);
      let at = 0;
      const arrivalsMs = Array.from({ length: n }, () => (at += (-Math.log(1 - random()) / rate) * 1000));
      o.log(`mixed: queue-mixed-poisson (${n} jobs at ${rate.toFixed(1)} jobs/s = ${o.load} × ${capacity.toFixed(1)})…`);
      const poisson = await produce({ redisUrl, jobs: jobsFor('p', mix.slice(0, n)), arrivalsMs, timeoutMs: o.rowTimeoutMs + o.poissonSeconds * 1000 }, o.rowTimeoutMs + o.poissonSeconds * 1000 + 30_000);
      logRow({
        ...queueRow(`queue-mixed-poisson`, o, precision, poisson, { load: o.load, arrivalsPerSecond: Number(rate.toFixed(2)), capacityJobsPerSecond: Number(capacity.toFixed(2)), engine: 'slots' }),
        // Offered load, not capacity: tokens/s over the span the jobs were in the system.
        newTokensPerSecond: poisson.tokens / poisson.spanSeconds,
        jobsPerSecond: poisson.completed / poisson.spanSeconds,
      });
    });
  } catch (e) {
    if (!continuous) logRow(failedRow('queue-mixed-continuous', o.slots, e));
    else logRow(failedRow('queue-mixed-poisson', o.slots, e));
  }

  let staticDeviceLoop: QueueRun | undefined;
  for (const path of o.staticPaths) {
    const name = path === 'deviceloop' ? 'queue-mixed-static' : 'queue-mixed-static-greedysearch';
    const deviceLoopMaxBatch = path === 'deviceloop' ? o.slots : 0;
    // Today's worker at its best: the shapes its full batches meet (capacity = longest prompt + bucket) run once first.
    // (The device loop rounds lengths up to 64 positions; GreedySearch captures nothing.)
    const context = model.manifest.spec.contextLength;
    const staticWarmup =
      onGpu && path === 'deviceloop'
        ? [...new Set([16, 32, 64, 128, 256, 512].map((b) => Math.min(Math.ceil((o.promptTokens[1] + Math.min(b, o.newTokens[1])) / 64) * 64, context)))]
        : [];
    try {
      await withWorker(path, { engine: 'batches', maxBatch: o.slots, maxWaitMs: 50, deviceLoopMaxBatch, warmupLengths: staticWarmup }, async (redisUrl, started) => {
        if (deviceLoopMaxBatch > 0 && !runsDeviceLoop(started.engine)) throw new Error('the device loop was requested but did not open');
        o.log(`mixed: ${name} (${o.jobs} jobs)…`);
        const out = await produce({ redisUrl, jobs: jobsFor(path === 'deviceloop' ? 's' : 'g', mix), timeoutMs: o.rowTimeoutMs }, o.rowTimeoutMs + 30_000);
        const stats = started.worker.stats.snapshot();
        const row = queueRow(name, o, precision, out, { maxBatch: o.slots, deviceLoop: deviceLoopMaxBatch > 0, engine: 'batches', batches: stats.batches, meanBatch: Number(stats.meanBatchSize.toFixed(1)) });
        if (path === 'deviceloop') staticDeviceLoop = { out, row };
        logRow(row);
      });
    } catch (e) {
      logRow(failedRow(name, o.slots, e));
    }
  }

  const tps = (name: string) => rows.find((r) => r.name === name && r.status === 'ok')?.newTokensPerSecond;
  const c = tps('queue-mixed-continuous');
  const s = staticDeviceLoop ? tps('queue-mixed-static') : tps('queue-mixed-static-greedysearch');
  const u = tps('engine-uniform');
  const report: MixedReport = {
    gpu: gpuName() ?? 'none (cpu)',
    device,
    shape: o.shape,
    precision,
    date: new Date().toISOString(),
    slots: o.slots,
    jobs: o.jobs,
    mix: {
      slotCapacity: capacity,
      seed: MIX_SEED,
      promptTokensMin: o.promptTokens[0],
      promptTokensMax: o.promptTokens[1],
      promptTokensMean: Number((sum((j) => j.promptTokens) / mix.length).toFixed(1)),
      newTokensMin: o.newTokens[0],
      newTokensMax: o.newTokens[1],
      newTokensMean: Number((sum((j) => j.maxNewTokens) / mix.length).toFixed(1)),
      usefulNewTokens: sum((j) => j.maxNewTokens),
    },
    rows,
    ratios: {
      ...(c && s ? { continuousOverStatic: Number((c / s).toFixed(3)) } : {}),
      ...(c && u ? { continuousOverEngineUniform: Number((c / u).toFixed(3)) } : {}),
    },
    targets: { continuousOverStatic: 2, continuousOverEngineUniform: 0.8 },
  };
  writeFileSync(join(o.outDir, `${o.name}.json`), `${JSON.stringify(report, null, 1)}\n`);
  return report;
}

/** The slot engine alone in its worker thread: uniformJobs requests of 8 → 256 tokens, all submitted at once. */
async function engineUniform(o: MixedBenchOptions, modelDir: string, capacity: number): Promise<BenchRow> {
  const engine = await ThreadedSlotEngine.open(modelDir, { device: o.device, slots: o.slots, capacity, onWarning: (m) => o.log(m) });
  try {
    const { chunkSteps } = engine.limits;
    // Three chunks first: the first runs plainly, the second captures the CUDA graph.
    await Promise.all(Array.from({ length: o.slots }, () => engine.generate({ promptIds: [0], maxNewTokens: 3 * chunkSteps, minNewTokens: 3 * chunkSteps })));
    const request = { promptIds: promptOf(8), maxNewTokens: 248, minNewTokens: 248 };
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: o.uniformJobs }, () => engine.generate(request)));
    const seconds = (performance.now() - started) / 1000;
    const tokens = results.reduce((a, r) => a + r.tokenIds.length, 0);
    return {
      name: 'engine-uniform',
      batch: o.slots,
      status: 'ok',
      newTokensPerSecond: tokens / seconds,
      jobsPerSecond: results.length / seconds,
      precision: o.device.kind === 'cpu' ? 'fp32' : 'fp16',
      promptTokens: 8,
      totalTokens: 256,
      variant: { jobs: o.uniformJobs, slots: o.slots, chunkSteps, capacity, engine: 'slots' },
      gpuMemoryMiB: gpuMemoryOf(),
      note: `${results.length} jobs of 8 → 256 tokens in ${seconds.toFixed(2)} s (slot engine in its thread, no queue)`,
    };
  } finally {
    await engine.close();
  }
}

const num = (x: number | undefined, digits = 0): string => (x === undefined || Number.isNaN(x) ? '–' : x.toLocaleString('en-US', { maximumFractionDigits: digits }));

/** The report as a short text table. */
export function mixedTable(r: MixedReport): string {
  const lines = [
    `mixed workload on ${r.gpu} (${r.device}): ${r.shape} ${r.precision}, ${r.slots} slots, ${r.jobs} jobs, prompts ${r.mix.promptTokensMin}-${r.mix.promptTokensMax} ` +
      `(mean ${r.mix.promptTokensMean}), max_new_tokens ${r.mix.newTokensMin}-${r.mix.newTokensMax} (mean ${r.mix.newTokensMean}), log-uniform`,
    '',
    `${'row'.padEnd(34)}${'status'.padEnd(8)}${'new tok/s'.padStart(12)}${'jobs/s'.padStart(10)}${'p50 lat ms'.padStart(12)}${'p99 lat ms'.padStart(12)}${'p50 TTFT'.padStart(10)}${'p99 TTFT'.padStart(10)}`,
  ];
  for (const row of r.rows) {
    const v = row.variant ?? {};
    lines.push(
      `${row.name.padEnd(34)}${(row.status ?? "ok").padEnd(8)}${num(row.newTokensPerSecond).padStart(12)}${num(row.jobsPerSecond, 1).padStart(10)}` +
        `${num(v.p50LatencyMs as number | undefined).padStart(12)}${num(v.p99LatencyMs as number | undefined).padStart(12)}` +
        `${num(v.p50TimeToFirstTokenMs as number | undefined).padStart(10)}${num(v.p99TimeToFirstTokenMs as number | undefined).padStart(10)}` +
        (row.error ? `  ${row.error.split('\n')[0]}` : ''),
    );
  }
  const { continuousOverStatic: cs, continuousOverEngineUniform: cu } = r.ratios;
  lines.push(
    '',
    `continuous / static: ${cs === undefined ? '–' : `${cs.toFixed(2)}×`} (target ≥ 2×${cs === undefined ? '' : cs >= 2 ? ': met' : ': missed'}); ` +
      `continuous / engine-uniform: ${cu === undefined ? '–' : cu.toFixed(2)} (target ≥ 0.8${cu === undefined ? '' : cu >= 0.8 ? ': met' : ': missed'})`,
  );
  return lines.join('\n');
}
