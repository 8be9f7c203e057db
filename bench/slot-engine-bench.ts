/**
 * The slot engine against today's static batches, engine only (no queue): a random checkpoint of a bench shape
 * (bench-models.ts: GPT-2 tiny/small/large, Llama-3.2-1B, Qwen2.5-0.5B) built here, greedy, no early stop
 * (min_new_tokens = max_new_tokens, so both sides generate the same token counts).
 *   uniform: J jobs of 8 → 256 tokens through S slots, and through the device loop in batches of S;
 *   mixed:   J jobs, prompts 4-512 tokens, max_new_tokens 16-512 (seeded), through S slots, and as the worker
 *            batches them today: by the power-of-two bucket of max_new_tokens, S per device-loop run;
 *   uniform-slots, mixed-slots: the slot engine's half of those alone;
 *   prefill: time to first token of one 512-token prompt (alone), and of the same prompt fed one token per step;
 *   prefill-shapes: admissions of R prompts of L tokens (repeated shapes and new ones): device time of their
 *            prefill runs against the host time spent launching them, to tell fixed costs from per-token ones.
 *   node dist/bench/slot-engine-bench.js --device cuda:0 --precision fp16 --shape small --slots 256 --jobs 2048 --json out.json
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DeviceLoopRunner } from '../src/engine/device-loop-runner.js';
import { parseDevice } from '../src/engine/execution-provider.js';
import type { GenerationRequest } from '../src/engine/generation-types.js';
import { SlotEngine } from '../src/engine/slot-engine.js';
import type { SlotRequest, SlotResult, SlotStats } from '../src/engine/slot-types.js';
import { type BenchModelShape, benchCheckpoint, benchModel } from './bench-models.js';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'small' },
    device: { type: 'string', default: 'cpu' },
    precision: { type: 'string', default: 'fp32' },
    slots: { type: 'string', default: '256' },
    jobs: { type: 'string', default: '2048' },
    'chunk-steps': { type: 'string', default: '16' },
    'prefill-chunk': { type: 'string', default: '512' },
    'prefill-rows': { type: 'string' },
    capacity: { type: 'string' },
    'prefill-profile': { type: 'string' },
    sections: { type: 'string', default: 'uniform,mixed,prefill' },
    work: { type: 'string', default: '/tmp/genqueue-bench' },
    json: { type: 'string' },
  },
});
const precision = values.precision === 'fp16' ? 'fp16' : 'fp32';
const device = parseDevice(values.device!);
const model = await benchModel(values.work!, benchCheckpoint(values.work!, values.shape as BenchModelShape), precision);
const S = Number(values.slots);
const J = Number(values.jobs);
const sections = new Set(values.sections!.split(','));

let seed = 12345;
const random = (): number => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return seed / 2 ** 32;
};
const between = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
const prompt = (n: number): number[] => Array.from({ length: n }, () => between(0, 50000));

const t0 = performance.now();
const engine = SlotEngine.open(model.dir, {
  device,
  slots: S,
  chunkSteps: Number(values['chunk-steps']),
  prefillChunk: Number(values['prefill-chunk']),
  ...(values['prefill-rows'] ? { prefillRows: Number(values['prefill-rows']) } : {}),
  ...(values.capacity ? { capacity: Number(values.capacity) } : {}),
  ...(values['prefill-profile'] ? { prefillProfilePrefix: values['prefill-profile'] } : {}),
  onWarning: (m) => console.error(m),
});
const openSeconds = (performance.now() - t0) / 1000;
const loop = DeviceLoopRunner.open(model.dir, model.manifest, { device });

/**
 * Where a run's wall time went, from the engine's counters before and after it. decodeUtilisation: the share of
 * the decode row-steps that emitted a token (slotOccupancy: the share with a row running at the chunk's start, so
 * the rest is rows ending mid-chunk); idleShare: time the loop gave the device nothing (host scheduling, JS);
 * hostShare: time the engine's thread spent in native calls.
 */
function profileOf(before: SlotStats, after: SlotStats, wallSeconds: number) {
  const d = <K extends keyof SlotStats>(k: K) => (after[k] as number) - (before[k] as number);
  const prefillSeconds = d('prefillSeconds');
  const decodeSeconds = d('decodeSeconds');
  const decodeSteps = d('decodeSteps');
  const emittedTokens = d('emittedTokens');
  const rowSteps = d('rowSteps');
  const offered = decodeSteps * after.slots;
  return {
    wallSeconds,
    prefillSeconds,
    decodeSeconds,
    hostSeconds: d('hostSeconds'),
    admitSeconds: d('admitSeconds'),
    decodeSteps,
    prefillRuns: d('prefillRuns'),
    prefillTokens: d('prefillTokens'),
    rowSteps,
    emittedTokens,
    decodeUtilisation: emittedTokens / offered,
    slotOccupancy: rowSteps / offered,
    decodeShare: decodeSeconds / wallSeconds,
    prefillShare: prefillSeconds / wallSeconds,
    idleShare: 1 - (prefillSeconds + decodeSeconds) / wallSeconds,
    hostShare: d('hostSeconds') / wallSeconds,
    decodeTokensPerSecond: emittedTokens / decodeSeconds,
  };
}

/** All jobs through the slot engine at once; tokens/s over the whole run, time-to-first-token percentiles, profile. */
async function throughSlots(jobs: SlotRequest[]) {
  const before = engine.statsNow();
  const started = performance.now();
  const results: SlotResult[] = await Promise.all(jobs.map((j) => engine.generate(j)));
  const seconds = (performance.now() - started) / 1000;
  const profile = profileOf(before, engine.statsNow(), seconds);
  const tokens = results.reduce((a, r) => a + r.tokenIds.length, 0);
  const ttft = results.map((r) => r.timings.timeToFirstTokenMs ?? 0).sort((a, b) => a - b);
  const pct = (p: number) => ttft[Math.min(ttft.length - 1, Math.floor(p * ttft.length))]!;
  return { seconds, tokens, tokensPerSecond: tokens / seconds, ttftMs: { p50: pct(0.5), p95: pct(0.95), max: ttft.at(-1)! }, profile };
}

/** Static batches through the device loop, one after another. */
function throughStaticBatches(batches: GenerationRequest[][]) {
  const started = performance.now();
  let tokens = 0;
  for (const b of batches) for (const r of loop.run(b)) tokens += r.tokenIds.length;
  const seconds = (performance.now() - started) / 1000;
  return { seconds, tokens, tokensPerSecond: tokens / seconds, batches: batches.length };
}

const asGreedy = (j: SlotRequest): GenerationRequest => ({
  promptIds: j.promptIds,
  maxNewTokens: j.maxNewTokens,
  minNewTokens: j.maxNewTokens,
  repetitionPenalty: 1,
  search: { kind: 'greedy' },
});
const inBatches = <T>(items: T[], size: number): T[][] => Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size));
const report: Record<string, unknown> = { shape: values.shape, precision, device: engine.device, slots: S, jobs: J, limits: engine.limits, openSeconds };

// Warm-up: the first chunk runs plainly and the second captures the CUDA graph; the device loop captures per shape.
await throughSlots(Array.from({ length: S }, () => ({ promptIds: prompt(8), maxNewTokens: 48, minNewTokens: 48 })));
loop.run(Array.from({ length: S }, () => asGreedy({ promptIds: prompt(8), maxNewTokens: 248 })));

if (sections.has('uniform') || sections.has('uniform-slots')) {
  const jobs: SlotRequest[] = Array.from({ length: J }, () => ({ promptIds: prompt(8), maxNewTokens: 248, minNewTokens: 248 }));
  const slots = await throughSlots(jobs);
  report.uniform = { slots };
  if (sections.has('uniform')) {
    const staticRuns = throughStaticBatches(inBatches(jobs.map(asGreedy), S));
    report.uniform = { slots, deviceLoop: staticRuns, slotsOverDeviceLoop: slots.tokensPerSecond / staticRuns.tokensPerSecond };
  }
  console.log(JSON.stringify({ uniform: report.uniform }));
}

if (sections.has('mixed') || sections.has('mixed-slots')) {
  const jobs: SlotRequest[] = Array.from({ length: J }, () => {
    const n = between(4, 512);
    const m = between(16, 512);
    return { promptIds: prompt(n), maxNewTokens: m, minNewTokens: m };
  });
  const slots = await throughSlots(jobs);
  report.mixed = { slots };
  if (sections.has('mixed')) {
    // Today's worker: one group per power-of-two bucket of max_new_tokens, S jobs per device-loop run.
    const buckets = new Map<number, GenerationRequest[]>();
    for (const j of jobs) {
      const bucket = 2 ** Math.ceil(Math.log2(j.maxNewTokens));
      buckets.set(bucket, [...(buckets.get(bucket) ?? []), asGreedy(j)]);
    }
    const staticRuns = throughStaticBatches([...buckets.values()].flatMap((b) => inBatches(b, S)));
    report.mixed = { slots, bucketedDeviceLoop: staticRuns, slotsOverBucketed: slots.tokensPerSecond / staticRuns.tokensPerSecond };
  }
  console.log(JSON.stringify({ mixed: report.mixed }));
}

if (sections.has('prefill')) {
  const long = prompt(512);
  const chunked = await engine.generate({ promptIds: long, maxNewTokens: 1 });
  const stepwise = SlotEngine.open(model.dir, { device, slots: 1, chunkSteps: 1, prefillChunk: 1 });
  const oneByOne = await stepwise.generate({ promptIds: long, maxNewTokens: 1 });
  await stepwise.close();
  report.prefill = { promptTokens: 512, ttftMs: chunked.timings.timeToFirstTokenMs, ttftOneTokenPerRunMs: oneByOne.timings.timeToFirstTokenMs };
  console.log(JSON.stringify({ prefill: report.prefill }));
}

if (sections.has('prefill-shapes')) {
  // [rows, prompt tokens to prefill]: repeats of one shape, then lengths never seen before, then rows alone.
  const cases: [number, number][] = [
    [64, 7], [64, 7], [64, 7], [64, 100], [64, 100], [16, 300], [16, 300], [16, 301], [16, 302], [16, 303],
    [64, 511], [64, 511], [1, 100], [4, 100], [16, 100], [1, 511], [1, 511], [17, 211], [23, 97], [9, 402],
  ];
  const rows = [];
  for (const [n, length] of cases) {
    const before = engine.statsNow();
    const started = performance.now();
    await Promise.all(Array.from({ length: n }, () => engine.generate({ promptIds: prompt(length + 1), maxNewTokens: 1 })));
    const after = engine.statsNow();
    const ms = (k: 'prefillSeconds' | 'admitSeconds' | 'decodeSeconds') => Math.round((after[k] - before[k]) * 1e6) / 1e3;
    rows.push({ rows: n, length, wallMs: Math.round((performance.now() - started) * 1e3) / 1e3, prefillMs: ms('prefillSeconds'), admitMs: ms('admitSeconds'), decodeMs: ms('decodeSeconds'), runs: after.prefillRuns - before.prefillRuns });
    console.log(JSON.stringify(rows.at(-1)));
  }
  report.prefillShapes = rows;
}

report.stats = engine.statsNow();
loop.close();
await engine.close();
if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 1));
