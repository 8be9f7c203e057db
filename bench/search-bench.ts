import { Generator, type GeneratorOptions, runsDeviceLoop } from '../src/engine/generator.js';
import type { GenerationRequest } from '../src/engine/generation-types.js';
import { ThreadedGenerator } from '../src/engine/threaded-generator.js';
import type { DeviceSpec } from '../src/engine/execution-provider.js';
import type { TextGenerationEngine } from '../src/engine/text-generation-engine.js';
import { type BenchRow, type BenchShape, okRow, promptOf, timeIt } from './bench-types.js';
import { gpuMemoryOf } from './gpu-memory.js';

export function fixedLengthRequests(batch: number, shape: BenchShape, promptLength = shape.promptTokens): GenerationRequest[] {
  const newTokens = shape.totalTokens - shape.promptTokens;
  return Array.from({ length: batch }, () => ({
    promptIds: promptOf(promptLength),
    maxNewTokens: newTokens,
    minNewTokens: newTokens,
    repetitionPenalty: 1,
    search: { kind: 'greedy' as const },
  }));
}

async function checked(engine: TextGenerationEngine, requests: GenerationRequest[]): Promise<void> {
  const { results } = await engine.generate(requests);
  const bad = results.find((r) => 'error' in r);
  if (bad && 'error' in bad) throw new Error(bad.error);
}

export interface SearchBenchOptions {
  readonly modelDir: string;
  readonly device: DeviceSpec;
  readonly batches: readonly number[];
  readonly shape: BenchShape;
  readonly repeats: number;
  readonly generator?: Omit<GeneratorOptions, 'device'>;
}

/** The in-graph search (one run() per batch) over a batch sweep; records GPU memory after the largest batch. */
export async function searchRows(name: string, o: SearchBenchOptions, extra: Partial<BenchRow> = {}): Promise<BenchRow[]> {
  const warnings: string[] = [];
  const gen = await Generator.open(o.modelDir, { device: o.device, ...o.generator, onWarning: (m) => warnings.push(m) });
  // A row must measure what its name says: a requested device loop that fell back is an error, not a number.
  if ((o.generator?.deviceLoopMaxBatch ?? 0) > 0 && !runsDeviceLoop(gen)) {
    await gen.close();
    throw new Error(`${name}: ${warnings.join('; ') || 'device loop did not open'}`);
  }
  const rows: BenchRow[] = [];
  // The device loop runs one step per position after the first: prompt tokens are fed one per step.
  const steps = runsDeviceLoop(gen) ? o.shape.totalTokens - 1 : 0;
  try {
    for (const batch of o.batches) {
      const reqs = fixedLengthRequests(batch, o.shape);
      const seconds = await timeIt(() => checked(gen, reqs), o.repeats, 2);
      rows.push(
        okRow(name, batch, seconds, o.shape, {
          precision: gen.manifest.spec.precision,
          gpuMemoryMiB: gpuMemoryOf(),
          ...(steps ? { msPerStep: (seconds * 1000) / steps } : {}),
          // A fallback taken on the way (e.g. a small-batch step that could not be created) belongs with the numbers.
          ...(warnings.length ? { note: warnings.join('; ') } : {}),
          ...extra,
        }),
      );
    }
  } finally {
    await gen.close();
  }
  return rows;
}

export interface Measurement {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly note?: string;
}

/** First run after session creation vs the steady state, and session creation itself. */
export async function warmupMeasurements(o: SearchBenchOptions, batch: number): Promise<Measurement[]> {
  const t0 = performance.now();
  const gen = await Generator.open(o.modelDir, { device: o.device, ...o.generator });
  const create = (performance.now() - t0) / 1000;
  const reqs = fixedLengthRequests(batch, o.shape);
  try {
    const first = await timeIt(() => checked(gen, reqs), 1, 0);
    const steady = await timeIt(() => checked(gen, reqs), o.repeats, 1);
    return [
      { name: 'session-create', value: create, unit: 's', note: 'InferenceSession.create of the greedy search graph (weights loaded)' },
      { name: `first-run-bs${batch}`, value: first, unit: 's', note: 'first run() after creation (no warm-up)' },
      { name: `steady-run-bs${batch}`, value: steady, unit: 's', note: 'mean of later runs' },
    ];
  } finally {
    await gen.close();
  }
}

/**
 * Several sessions on one GPU: N engines (each in its own worker thread) run batches concurrently;
 * aggregate generated tokens/s against one engine.
 */
export async function concurrentSessionsRow(o: SearchBenchOptions, sessions: number, batch: number): Promise<BenchRow> {
  const engines = await Promise.all(
    Array.from({ length: sessions }, () => ThreadedGenerator.open(o.modelDir, { device: o.device, ...o.generator })),
  );
  try {
    const reqs = fixedLengthRequests(batch, o.shape);
    const seconds = await timeIt(() => Promise.all(engines.map((e) => checked(e, reqs))), o.repeats, 1);
    const row = okRow('opt-sessions-per-gpu', batch * sessions, seconds, o.shape, {
      variant: { sessions, batchPerSession: batch },
      gpuMemoryMiB: gpuMemoryOf(),
      note: `${sessions} sessions in one process, each running batch ${batch} at once`,
    });
    return row;
  } finally {
    await Promise.all(engines.map((e) => e.close()));
  }
}

/**
 * Batching policy on a mixed workload (prompt lengths and max_new_tokens vary): batches taken in arrival order
 * vs batches bucketed by max_new_tokens then prompt length. Same requests, same batch size.
 */
export async function batchingPolicyRows(o: SearchBenchOptions, batch: number, jobs: number): Promise<BenchRow[]> {
  const gen = await Generator.open(o.modelDir, { device: o.device, ...o.generator });
  let seed = 7;
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const maxNews = [32, 64, 128, 256];
  const requests: GenerationRequest[] = Array.from({ length: jobs }, () => {
    const newTokens = maxNews[Math.floor(rand() * maxNews.length)]!;
    // min_new_tokens stays 0: equal minimums would put every length in its own group and hide the policy.
    return {
      promptIds: promptOf(4 + Math.floor(rand() * 124)),
      maxNewTokens: newTokens,
      minNewTokens: 0,
      repetitionPenalty: 1,
      search: { kind: 'greedy' as const },
    };
  });
  let generated = 0;
  const runAll = async (order: GenerationRequest[]): Promise<void> => {
    for (let i = 0; i < order.length; i += batch) {
      const { results } = await gen.generate(order.slice(i, i + batch));
      for (const r of results) generated += 'error' in r ? 0 : r.tokenIds.length;
    }
  };
  const bucketed = [...requests].sort((a, b) => a.maxNewTokens - b.maxNewTokens || a.promptIds.length - b.promptIds.length);
  try {
    await runAll(requests.slice(0, batch)); // warm-up
    const rows: BenchRow[] = [];
    for (const [policy, order] of [
      ['arrival-order', requests],
      ['bucketed', bucketed],
    ] as const) {
      generated = 0;
      const seconds = await timeIt(() => runAll([...order]), 1, 0);
      const totalNew = generated;
      rows.push({
        name: `opt-batching-${policy}`,
        batch,
        status: 'ok',
        secondsPerBatch: seconds / Math.ceil(jobs / batch),
        newTokensPerSecond: totalNew / seconds,
        precision: gen.manifest.spec.precision,
        variant: { policy, jobs },
        note: `${jobs} jobs, prompts 4-127 tokens, max_new_tokens in {32,64,128,256} (no early stop); ${seconds.toFixed(2)} s in all`,
      });
    }
    return rows;
  } finally {
    await gen.close();
  }
}
