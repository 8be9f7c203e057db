import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { type ModelManifest, readManifest } from '../model/manifest.js';
import { SAMPLING_INPUTS, type SearchKind } from '../model/contract.js';
import { leftPad, planRuns, type PlannedRun } from './batch-plan.js';
import { DeviceLoopRunner } from './device-loop-runner.js';
import {
  assertCudaProviderInstalled,
  CudaProviderUnavailableError,
  type DeviceSpec,
  executionProviders,
  formatDevice,
  isProviderLoadFailure,
  preferFullFp32OnCuda,
} from './execution-provider.js';
import type { TextGenerationEngine } from './text-generation-engine.js';
import {
  type GenerationBatchResult,
  type GenerationRequest,
  type GenerationResult,
  resultFromGenerated,
  searchKey,
  warmupRequest,
} from './generation-types.js';

export interface GeneratorOptions {
  readonly device: DeviceSpec;
  /**
   * Greedy runs use the decoder whose KV cache is one in-place buffer (no per-step copy of the whole cache).
   * ONNX Runtime supports it on CUDA only; default: on for CUDA/TensorRT, off for CPU.
   */
  readonly sharedKvBuffer?: boolean;
  /** ONNX Runtime graph optimization level (default "all"). */
  readonly graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /**
   * Greedy batches of at most this many requests (without repetition penalty) run through the native device
   * loop (native/device-loop.cc: IO binding + CUDA graph replay of one decode step) instead of GreedySearch.
   * 0 (default) keeps every batch on the portable onnxruntime-node path; when the addon is not built or cannot
   * open the model, a warning is given and that path is used.
   */
  readonly deviceLoopMaxBatch?: number;
  /** Capture the device loop's step as a CUDA graph (default true on CUDA). */
  readonly deviceLoopCudaGraph?: boolean;
  /** Batches up to which the device loop runs the model's small-batch step (DeviceLoopRunnerOptions.smallBatchRows). */
  readonly deviceLoopSmallBatchRows?: number;
  /** Called when something requested could not be used and a fallback was (a provider, the device loop or its small-batch step). */
  readonly onWarning?: (message: string) => void;
}

/** Appended to a Generator's device description when greedy batches go through the native device loop. */
const DEVICE_LOOP_NOTE = ' (device loop)';

/** Whether an engine opened with deviceLoopMaxBatch really runs the device loop (it falls back with a warning). */
export function runsDeviceLoop(engine: Pick<TextGenerationEngine, 'device'>): boolean {
  return engine.device.endsWith(DEVICE_LOOP_NOTE);
}

const scalarI32 = (v: number): ort.Tensor => new ort.Tensor('int32', Int32Array.of(v), [1]);
const scalarF32 = (v: number): ort.Tensor => new ort.Tensor('float32', Float32Array.of(v), [1]);

/**
 * Runs a built model's search graphs. One run() turns a left-padded batch into finished sequences: the
 * decode loop, KV cache and logits stay inside ONNX Runtime. Sessions are created per search kind on first use.
 */
export class Generator implements TextGenerationEngine {
  private readonly sessions = new Map<SearchKind, Promise<ort.InferenceSession>>();
  private providerNote = '';
  private deviceLoop: DeviceLoopRunner | undefined;
  private readonly runs = { deviceLoop: 0, searchOps: 0 };

  private constructor(
    readonly modelDir: string,
    readonly manifest: ModelManifest,
    private readonly options: GeneratorOptions,
  ) {}

  /**
   * Opens a built model directory, creates its greedy session up front (so start-up errors surface here) and
   * warms up every path a greedy batch may take (warmUp).
   */
  static async open(modelDir: string, options: GeneratorOptions): Promise<Generator> {
    preferFullFp32OnCuda(options.device);
    const manifest = readManifest(modelDir);
    if (manifest.spec.precision === 'fp16' && options.device.kind === 'cpu') {
      throw new Error(`${modelDir} is an fp16 build: ONNX Runtime's CPU kernels for its operators are fp32 only; use --device cuda:N or an fp32 build`);
    }
    const g = new Generator(modelDir, manifest, options);
    try {
      await g.session(g.greedyKind);
      if ((options.deviceLoopMaxBatch ?? 0) > 0) g.openDeviceLoop();
      await g.warmUp();
    } catch (e) {
      await g.close().catch(() => undefined);
      throw e;
    }
    return g;
  }

  /**
   * One tiny greedy generation through GreedySearch and, when it is open, through the device loop (which
   * otherwise takes every small greedy batch, leaving GreedySearch cold): a session's first run is slower than
   * the next ones (bench/results), and that cost belongs to start-up, not to the first job on either path.
   */
  private async warmUp(): Promise<void> {
    const requests = [warmupRequest(this.manifest.spec.eosTokenId, 2)];
    for (const run of planRuns(requests, [0], this.manifest.spec.contextLength)) await this.runOne(requests, run);
    if (this.deviceLoop) this.runDeviceLoop(requests);
  }

  /** Graph runs since open (warm-up included) by path: the native device loop, and ONNX Runtime's search ops. */
  get runCounts(): { deviceLoop: number; searchOps: number } {
    return { ...this.runs };
  }

  private get greedyKind(): SearchKind {
    const shared = this.options.sharedKvBuffer ?? this.options.device.kind !== 'cpu';
    return shared && this.manifest.files.greedyShared ? 'greedyShared' : 'greedy';
  }

  get device(): string {
    return formatDevice(this.options.device) + this.providerNote + (this.deviceLoop ? DEVICE_LOOP_NOTE : '');
  }

  private openDeviceLoop(): void {
    try {
      this.deviceLoop = DeviceLoopRunner.open(this.modelDir, this.manifest, {
        device: this.options.device,
        ...(this.options.deviceLoopCudaGraph === undefined ? {} : { cudaGraph: this.options.deviceLoopCudaGraph }),
        ...(this.options.deviceLoopSmallBatchRows === undefined ? {} : { smallBatchRows: this.options.deviceLoopSmallBatchRows }),
        ...(this.options.onWarning ? { onWarning: this.options.onWarning } : {}),
      });
    } catch (e) {
      this.options.onWarning?.(`device loop unavailable (${(e as Error).message.split('\n')[0]}); greedy batches use GreedySearch`);
    }
  }

  private usesDeviceLoop(r: GenerationRequest, groupSize: number): boolean {
    return this.deviceLoop !== undefined && r.search.kind === 'greedy' && r.repetitionPenalty === 1 && groupSize <= (this.options.deviceLoopMaxBatch ?? 0);
  }

  /**
   * Generates for every request. Invalid requests (too long for the context, ids outside the vocabulary)
   * get an error entry; the rest are grouped by search parameters and run.
   */
  async generate(requests: readonly GenerationRequest[]): Promise<GenerationBatchResult> {
    const results: GenerationBatchResult['results'] = requests.map(() => ({ error: 'not run' }));
    const groups = new Map<string, number[]>();
    requests.forEach((r, i) => {
      const problem = this.validate(r);
      if (problem) {
        results[i] = { error: problem };
        return;
      }
      const key = searchKey(r);
      groups.set(key, [...(groups.get(key) ?? []), i]);
    });
    const started = performance.now();
    let runs = 0;
    for (const indices of groups.values()) {
      if (this.usesDeviceLoop(requests[indices[0]!]!, indices.length)) {
        // Prompts need no padding there (fed one token per step), so one run takes the whole group.
        runs++;
        const out = this.runDeviceLoop(indices.map((i) => requests[i]!));
        indices.forEach((i, row) => (results[i] = out[row]!));
        continue;
      }
      for (const run of planRuns(requests, indices, this.manifest.spec.contextLength)) {
        runs++;
        const out = await this.runOne(requests, run);
        run.indices.forEach((i, row) => (results[i] = out[row]!));
      }
    }
    return { results, timings: { generateMs: performance.now() - started, runs, batchSize: requests.length } };
  }

  private runDeviceLoop(requests: readonly GenerationRequest[]): GenerationResult[] {
    this.runs.deviceLoop++;
    return this.deviceLoop!.run(requests);
  }

  async close(): Promise<void> {
    this.deviceLoop?.close();
    this.deviceLoop = undefined;
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }

  private validate(r: GenerationRequest): string | undefined {
    const { contextLength, vocabSize } = this.manifest.spec;
    if (r.promptIds.length === 0) return 'prompt is empty after tokenization';
    if (r.maxNewTokens < 1) return 'max_new_tokens must be at least 1';
    if (r.promptIds.length + r.maxNewTokens > contextLength) {
      return `prompt (${r.promptIds.length} tokens) + max_new_tokens (${r.maxNewTokens}) = ${r.promptIds.length + r.maxNewTokens} exceeds the model's context length ${contextLength}`;
    }
    if (r.promptIds.some((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize)) return `prompt has token ids outside [0, ${vocabSize})`;
    return undefined;
  }

  private async runOne(requests: readonly GenerationRequest[], run: PlannedRun): Promise<GenerationResult[]> {
    this.runs.searchOps++;
    const first = requests[run.indices[0]!]!;
    const rows = run.indices.map((i) => requests[i]!);
    const S = run.promptLength;
    const { eosTokenId, padTokenId } = this.manifest.spec;
    // ONNX Runtime's GPT search derives first-step positions from input_ids != pad_token_id, so padding must use that id.
    const { ids, mask } = leftPad(rows.map((r) => r.promptIds), S, padTokenId);
    const B = rows.length;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int32', ids, [B, S]),
      attention_mask: new ort.Tensor('int32', mask, [B, S]),
      max_length: scalarI32(S + run.maxNewTokens),
      min_length: scalarI32(this.minLengthInput(S, first.minNewTokens)),
      repetition_penalty: scalarF32(first.repetitionPenalty),
    };
    let sequences: ort.Tensor;
    const search = first.search;
    if (search.kind === 'beam') {
      feeds.num_beams = scalarI32(search.numBeams);
      feeds.num_return_sequences = scalarI32(1);
      feeds.length_penalty = scalarF32(search.lengthPenalty);
      sequences = (await (await this.session('beam')).run(feeds)).sequences!;
    } else if (search.kind === 'sample') {
      feeds[SAMPLING_INPUTS.temperature] = scalarF32(search.temperature);
      feeds[SAMPLING_INPUTS.topK] = new ort.Tensor('int64', BigInt64Array.of(BigInt(search.topK)), [1]);
      feeds[SAMPLING_INPUTS.topP] = scalarF32(search.topP);
      feeds[SAMPLING_INPUTS.filter] = new ort.Tensor('bool', Uint8Array.of(search.topK > 0 || search.topP < 1 ? 1 : 0), []);
      sequences = (await (await this.session('sample')).run(feeds)).sequences!;
    } else {
      sequences = (await (await this.session(this.greedyKind)).run(feeds)).sequences!;
    }
    const data = sequences.data as Int32Array;
    const L = Number(sequences.dims[sequences.dims.length - 1]);
    return rows.map((r, row) => {
      const start = row * L + S;
      return resultFromGenerated(data.subarray(start, Math.min(start + r.maxNewTokens, (row + 1) * L)), eosTokenId);
    });
  }

  /**
   * ONNX Runtime 1.29 reads min_length differently per provider: the CPU logits processor counts the whole
   * sequence (padded prompt included), the CUDA one counts new tokens only.
   */
  private minLengthInput(promptLength: number, minNewTokens: number): number {
    if (minNewTokens === 0) return 0;
    return this.options.device.kind === 'cpu' ? promptLength + minNewTokens : minNewTokens;
  }

  private session(kind: SearchKind): Promise<ort.InferenceSession> {
    let s = this.sessions.get(kind);
    if (!s) {
      const file = this.manifest.files[kind];
      if (!file) return Promise.reject(new Error(`${this.modelDir} has no ${kind} graph`));
      s = this.createSession(join(this.modelDir, file));
      this.sessions.set(kind, s);
      s.catch(() => this.sessions.delete(kind));
    }
    return s;
  }

  private async createSession(path: string): Promise<ort.InferenceSession> {
    const { device } = this.options;
    assertCudaProviderInstalled(device);
    const base: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: this.options.graphOptimizationLevel ?? 'all' };
    try {
      return await ort.InferenceSession.create(path, { ...base, executionProviders: executionProviders(device) });
    } catch (e) {
      if (device.kind !== 'tensorrt') throw providerError(device, e);
      const message = `TensorRT execution provider unavailable (${(e as Error).message.split('\n')[0]}); falling back to CUDA`;
      this.options.onWarning?.(message);
      this.providerNote = ' (tensorrt unavailable, cuda fallback)';
      const cuda: DeviceSpec = { kind: 'cuda', deviceId: device.deviceId };
      return ort.InferenceSession.create(path, { ...base, executionProviders: executionProviders(cuda) }).catch((e2: unknown) => {
        throw providerError(cuda, e2);
      });
    }
  }
}

/** A CUDA provider that fails to load becomes CudaProviderUnavailableError (one line, pointing to doctor). */
function providerError(device: DeviceSpec, e: unknown): unknown {
  if (device.kind === 'cpu' || !isProviderLoadFailure(e)) return e;
  return new CudaProviderUnavailableError(formatDevice(device), (e as Error).message.split('\n')[0]!, { cause: e });
}
