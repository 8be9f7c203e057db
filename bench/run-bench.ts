import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { type DeviceSpec, executionProviders } from '../src/engine/execution-provider.js';
import type { ModelManifest } from '../src/model/manifest.js';
import { BASELINE_VARIANTS, type BaselineName, type BenchModelShape, baselineDecoders, benchCheckpoint, benchModel } from './bench-models.js';
import { type BenchRow, type BenchShape, okRow, timeIt } from './bench-types.js';
import { gpuMemoryOf, gpuName } from './gpu-memory.js';
import { hfRows } from './hf-baseline.js';
import { HostLoopBench } from './host-loop-bench.js';
import { multiWorkerRow } from './multi-worker-bench.js';
import { queueE2eRow } from './queue-bench.js';
import {
  type Measurement,
  batchingPolicyRows,
  concurrentSessionsRow,
  searchRows,
  warmupMeasurements,
} from './search-bench.js';
import { smallBatchWeightBytes } from './step-weights.js';
import { tensorrtRow } from './tensorrt-probe.js';
import { loadDeviceLoopAddon } from '../src/engine/device-loop-runner.js';

/** Why the device-loop addon cannot load here, or undefined when it can. */
function deviceLoopUnavailable(): string | undefined {
  try {
    loadDeviceLoopAddon();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

export const BENCH_SECTIONS = ['ingraph', 'native', 'optimizations', 'baselines', 'kv', 'tensorrt', 'queue', 'large', 'hf'] as const;
export type BenchSection = (typeof BENCH_SECTIONS)[number];

export interface BenchOptions {
  readonly device: DeviceSpec;
  readonly workDir: string;
  /** Where each section's JSON is written (parts/<section>.json). */
  readonly outDir: string;
  readonly sections: readonly BenchSection[];
  readonly batches: readonly number[];
  readonly repeats: number;
  /** Shape of the main model (GPT-2 small on the GPU; tiny for a CPU smoke run; llama-3.2-1b, qwen2.5-0.5b). */
  readonly shape: BenchModelShape;
  readonly hfScript?: string;
  /** Jobs for queue-e2e. */
  readonly queueJobs: number;
  readonly log: (line: string) => void;
}

export interface SectionResult {
  readonly section: BenchSection;
  /** Shape of the main model ('small' for the reported GPT-2 runs). */
  readonly modelShape: BenchModelShape;
  readonly gpu: string;
  readonly device: string;
  readonly rows: BenchRow[];
  readonly measurements: Measurement[];
  readonly finishedAt: string;
}

const SEED: BenchShape = { promptTokens: 8, totalTokens: 256 };

/**
 * Row names and part files of the other shapes carry their shape's prefix (llama1b-ort-native-cudagraph-fp16,
 * parts/llama1b-native.json), so runs of several shapes sit side by side in one report; GPT-2's keep theirs.
 */
const ROW_PREFIX: Record<BenchModelShape, string> = { tiny: '', demo: '', small: '', large: '', 'llama-3.2-1b': 'llama1b-', 'qwen2.5-0.5b': 'qwen05b-' };
/** hf_generate_bench.py's --arch for each shape (it names its rows <arch>-hf-transformers, GPT-2's hf-transformers). */
const HF_ARCH: Record<BenchModelShape, string> = { tiny: 'gpt2', demo: 'gpt2', small: 'gpt2', large: 'gpt2', 'llama-3.2-1b': 'llama1b', 'qwen2.5-0.5b': 'qwen05b' };

/** Runs the requested sections one after another, writing each section's JSON as soon as it is done. */
export async function runBench(o: BenchOptions): Promise<SectionResult[]> {
  mkdirSync(join(o.outDir, 'parts'), { recursive: true });
  const ckpt = benchCheckpoint(o.workDir, o.shape);
  const gpu = gpuName() ?? 'none (cpu)';
  const results: SectionResult[] = [];
  for (const section of o.sections) {
    o.log(`section ${section}…`);
    const rows: BenchRow[] = [];
    const measurements: Measurement[] = [];
    const started = performance.now();
    try {
      await runSection(section, o, ckpt, rows, measurements);
    } catch (e) {
      rows.push({ name: `${section}-section`, batch: 0, status: 'failed', error: (e as Error).stack?.slice(0, 800) ?? String(e) });
    }
    const result: SectionResult = {
      section,
      modelShape: o.shape,
      gpu,
      device: o.device.kind === 'cpu' ? 'cpu' : `${o.device.kind}:${o.device.deviceId}`,
      rows,
      measurements: [...measurements, { name: `${section}-wall`, value: (performance.now() - started) / 1000, unit: 's' }],
      finishedAt: new Date().toISOString(),
    };
    const prefix = ROW_PREFIX[o.shape];
    for (const [i, r] of rows.entries()) if (!r.name.startsWith(prefix)) rows[i] = { ...r, name: prefix + r.name };
    writeFileSync(join(o.outDir, 'parts', `${prefix}${section}.json`), JSON.stringify(result, null, 1));
    for (const r of rows) o.log(`  ${JSON.stringify(r)}`);
    for (const r of rows.filter((x) => x.msPerStep)) {
      o.log(`  ${r.name} batch ${r.batch}: ${r.msPerStep!.toFixed(3)} ms/step, ${Math.round(r.newTokensPerSecond!)} new tokens/s${r.note ? ` (${r.note})` : ''}`);
    }
    results.push(result);
  }
  return results;
}

async function runSection(section: BenchSection, o: BenchOptions, ckpt: string, rows: BenchRow[], m: Measurement[]): Promise<void> {
  const onGpu = o.device.kind !== 'cpu';
  const fp16 = onGpu ? 'fp16' : 'fp32'; // ONNX Runtime's CPU kernels for these ops are fp32 only
  switch (section) {
    case 'ingraph': {
      for (const precision of onGpu ? (['fp32', 'fp16'] as const) : (['fp32'] as const)) {
        const model = await benchModel(o.workDir, ckpt, precision);
        const base = { modelDir: model.dir, device: o.device, batches: o.batches, shape: SEED, repeats: o.repeats };
        rows.push(...(await searchRows(`ort-ingraph-${precision}`, base, { variant: { sharedKvBuffer: onGpu } })));
      }
      return;
    }
    case 'native': {
      // The native addon's device loop (IO binding; CUDA graph replay on/off) against the same model's GreedySearch rows.
      const model = await benchModel(o.workDir, ckpt, fp16);
      const name = onGpu ? `ort-native-cudagraph-${fp16}` : `ort-native-${fp16}`;
      const unavailable = deviceLoopUnavailable();
      if (unavailable) {
        rows.push({ name, batch: 0, status: 'unavailable', error: unavailable });
        return;
      }
      const base = { modelDir: model.dir, device: o.device, batches: o.batches, shape: SEED, repeats: o.repeats };
      rows.push(...(await searchRows(name, { ...base, generator: { deviceLoopMaxBatch: 4096 } }, { variant: { deviceLoop: true, cudaGraph: onGpu } })));
      if (onGpu) {
        const off = { ...base, batches: [1, 64].filter((b) => o.batches.includes(b)), generator: { deviceLoopMaxBatch: 4096, deviceLoopCudaGraph: false } };
        rows.push(...(await searchRows(`ort-native-nograph-${fp16}`, off, { variant: { deviceLoop: true, cudaGraph: false } })));
        // Batch 1 on the regular step (ONNX Runtime's MatMul on cuBLAS) instead of the small-batch step.
        const regular = { ...base, batches: [1].filter((b) => o.batches.includes(b)), generator: { deviceLoopMaxBatch: 4096, deviceLoopSmallBatchRows: 0 } };
        rows.push(...(await searchRows(`ort-native-nosmallbatch-${fp16}`, regular, { variant: { deviceLoop: true, cudaGraph: true, smallBatchStep: false } })));
        const small = model.manifest.files.deviceLoopSmallBatch;
        if (small) notePerStepBandwidth(rows, smallBatchWeightBytes(join(model.dir, small)));
      }
      return;
    }
    case 'optimizations': {
      const model = await benchModel(o.workDir, ckpt, fp16);
      const base = { modelDir: model.dir, device: o.device, batches: [1, 64, 256].filter((b) => o.batches.includes(b)), shape: SEED, repeats: o.repeats };
      if (onGpu) {
        rows.push(...(await searchRows('opt-kv-growing', { ...base, generator: { sharedKvBuffer: false } }, { variant: { sharedKvBuffer: false } })));
      }
      for (const level of ['disabled', 'basic'] as const) {
        rows.push(
          ...(await searchRows(`opt-graph-level-${level}`, { ...base, batches: base.batches.slice(0, 2), generator: { graphOptimizationLevel: level } }, {
            variant: { graphOptimizationLevel: level },
          })),
        );
      }
      m.push(...(await warmupMeasurements(base, 64)));
      m.push(...(await optimizedModelMeasurements(model.dir, model.manifest, o.device, onGpu)));
      for (const sessions of [1, 2]) rows.push(await concurrentSessionsRow(base, sessions, 64));
      rows.push(...(await batchingPolicyRows(base, 64, onGpu ? 512 : 64)));
      return;
    }
    case 'baselines': {
      const decoders = baselineDecoders(o.workDir, ckpt, 'fp32');
      const model = await benchModel(o.workDir, ckpt, 'fp32');
      const plan: [BaselineName, string, number[]][] = [
        ['naive', 'ort-naive-nocache', [1]],
        ['argmaxNoCache', 'ort-argmax-nocache', [1, 64]],
        ['hostKv', 'ort-host-kv', [1, 64]],
      ];
      for (const [kind, name, batches] of plan) {
        const bench = await HostLoopBench.open(decoders[kind], kind, model.manifest.spec, o.device);
        try {
          for (const batch of batches) {
            const seconds = await timeIt(() => bench.generate(batch, SEED), 1, 1);
            rows.push(okRow(name, batch, seconds, SEED, { precision: 'fp32', variant: { ...BASELINE_VARIANTS[kind] }, gpuMemoryMiB: gpuMemoryOf() }));
          }
        } finally {
          await bench.close();
        }
      }
      return;
    }
    case 'kv': {
      // Does the KV cache pay off once it stays on the GPU? Same precision, cache in-graph vs no cache.
      const decoders = baselineDecoders(o.workDir, ckpt, fp16);
      const model = await benchModel(o.workDir, ckpt, fp16);
      for (const totalTokens of [256, 1024]) {
        const shape = { promptTokens: 8, totalTokens };
        rows.push(...(await searchRows('kv-cache-ingraph', { modelDir: model.dir, device: o.device, batches: [1, 64], shape, repeats: 1 }, { variant: { kvCache: true } })));
        const bench = await HostLoopBench.open(decoders.argmaxNoCache, 'argmaxNoCache', model.manifest.spec, o.device);
        try {
          for (const batch of [1, 64]) {
            const seconds = await timeIt(() => bench.generate(batch, shape), 1, 0);
            rows.push(okRow('kv-nocache-argmax', batch, seconds, shape, { precision: fp16, variant: { kvCache: false } }));
          }
        } finally {
          await bench.close();
        }
      }
      return;
    }
    case 'tensorrt': {
      const model = await benchModel(o.workDir, ckpt, 'fp32');
      rows.push(await tensorrtRow(join(model.dir, model.manifest.files.greedy), o.device.kind === 'cpu' ? 0 : o.device.deviceId));
      return;
    }
    case 'queue': {
      const model = await benchModel(o.workDir, ckpt, fp16);
      for (const batch of [64, 256].filter((b) => o.batches.includes(b))) {
        for (const [concurrencyFactor, fetchers] of [[2, 2], [2, 4]] as const) {
          rows.push(await queueE2eRow({ model: { ...model, name: 'bench' }, device: o.device, batch, jobs: o.queueJobs, shape: SEED, concurrencyFactor, fetchers }));
        }
        // Engine alone at the same batch, in the same section, for the queue/engine ratio.
        rows.push(...(await searchRows('queue-engine-reference', { modelDir: model.dir, device: o.device, batches: [batch], shape: SEED, repeats: o.repeats })));
        if (onGpu && !deviceLoopUnavailable()) {
          // The same through the native device loop, against that engine alone.
          // Fetchers: the worker's own default for this batch (recorded in the row's variant).
          rows.push(await queueE2eRow({ model: { ...model, name: 'bench' }, device: o.device, batch, jobs: o.queueJobs, shape: SEED, concurrencyFactor: 2, deviceLoopMaxBatch: batch }));
          const loop = { modelDir: model.dir, device: o.device, batches: [batch], shape: SEED, repeats: o.repeats, generator: { deviceLoopMaxBatch: batch } };
          rows.push(...(await searchRows('queue-engine-reference-native', loop, { variant: { deviceLoop: true } })));
        }
      }
      return;
    }
    case 'large': {
      const large = onGpu ? benchCheckpoint(o.workDir, 'large') : ckpt;
      await benchModel(o.workDir, large, fp16); // build once, before the workers start
      const device = o.device.kind === 'cpu' ? 'cpu' : `cuda:${o.device.deviceId}`;
      rows.push(
        await multiWorkerRow({
          model: large,
          cacheDir: join(o.workDir, 'cache'),
          devices: [device, device],
          precision: fp16,
          batch: onGpu ? 64 : 2,
          shape: onGpu ? SEED : { promptTokens: 8, totalTokens: 24 },
          label: onGpu ? 'two-workers-gpt2-large' : 'two-workers-smoke',
        }),
      );
      return;
    }
    case 'hf': {
      if (!o.hfScript) {
        rows.push({ name: 'hf-transformers', batch: 0, status: 'unavailable', note: 'no --hf-script given' });
        return;
      }
      rows.push(...(await hfRows(o.hfScript, o.batches, HF_ARCH[o.shape], o.repeats)).rows);
      return;
    }
  }
}

/** Batch-1 device-loop rows get the bandwidth their step time means for the weights every step must read. */
function notePerStepBandwidth(rows: BenchRow[], weightBytes: number): void {
  for (const [i, r] of rows.entries()) {
    if (r.batch !== 1 || !r.msPerStep) continue;
    const note = `weights ${(weightBytes / 1e9).toFixed(3)} GB per step: ${(weightBytes / (r.msPerStep / 1000) / 1e12).toFixed(2)} TB/s`;
    rows[i] = { ...r, note: r.note ? `${r.note}; ${note}` : note };
  }
}

/** Session creation from the built graph vs from ONNX Runtime's saved optimized graph. */
async function optimizedModelMeasurements(modelDir: string, manifest: ModelManifest, device: DeviceSpec, onGpu: boolean): Promise<Measurement[]> {
  const source = join(modelDir, onGpu && manifest.files.greedyShared ? manifest.files.greedyShared : manifest.files.greedy);
  const optimized = join(modelDir, 'bench-optimized.onnx');
  const create = async (path: string, extra: Record<string, unknown> = {}): Promise<number> => {
    const t = performance.now();
    const s = await ort.InferenceSession.create(path, { executionProviders: executionProviders(device), graphOptimizationLevel: 'all', ...extra });
    const seconds = (performance.now() - t) / 1000;
    await s.release();
    return seconds;
  };
  try {
    const plain = await create(source);
    await create(source, { optimizedModelFilePath: optimized });
    const cached = await create(optimized, { graphOptimizationLevel: 'disabled' });
    return [
      { name: 'session-create-from-built-graph', value: plain, unit: 's' },
      { name: 'session-create-from-optimized-graph', value: cached, unit: 's', note: 'optimizedModelFilePath saved once, reloaded with optimizations off' },
    ];
  } catch (e) {
    return [{ name: 'session-create-from-optimized-graph', value: Number.NaN, unit: 's', note: `failed: ${(e as Error).message.slice(0, 300)}` }];
  }
}
