import { join } from 'node:path';
import type { DeviceSpec } from '../engine/execution-provider.js';
import { formatDevice, parseDevice } from '../engine/execution-provider.js';
import type { FinishReason } from '../engine/generation-types.js';
import { Generator } from '../engine/generator.js';
import type { TextGenerationEngine } from '../engine/text-generation-engine.js';
import { ThreadedGenerator } from '../engine/threaded-generator.js';
import type { ModelManifest } from '../model/manifest.js';
import { resolveModelArg } from '../model/model-reference.js';
import type { FloatPrecision } from '../model/onnx/tensor-types.js';
import { type JobInput, jobFromFields } from '../queue/job-schema.js';
import { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { generationRequestFor } from '../worker/job-request.js';
import { type ConfigOptions, configFrom } from './load-options.js';

export interface OpenEngineOptions extends ConfigOptions {
  /** A config model name, a Hugging Face checkpoint directory (built on first use), a built model directory or a hub id. */
  readonly model: string;
  /** `cpu`, `cuda:N` or `tensorrt:N` (default: the config's worker.device). */
  readonly device?: string | DeviceSpec;
  /** fp32 or fp16 build (default: the config's model entry, then worker.precision). */
  readonly precision?: FloatPrecision;
  /** Greedy batches up to this size use the native device loop (default: the config's worker.deviceLoopMaxBatch). */
  readonly deviceLoopMaxBatch?: number;
  /**
   * Run the ONNX Runtime sessions in a worker thread (default true), so that a long batch never blocks this
   * thread's event loop; false keeps them in this thread.
   */
  readonly thread?: boolean;
  /** Called when a requested provider or the device loop could not load and a fallback is used. */
  readonly onWarning?: (message: string) => void;
}

/** One prompt's outcome from {@link OpenedEngine.generate}. */
export type TextGeneration =
  | {
      readonly prompt: string;
      readonly promptTokenIds: number[];
      /** Generated ids only: no prompt, no padding, no terminating EOS. */
      readonly tokenIds: number[];
      readonly text: string;
      readonly finishReason: FinishReason;
    }
  | { readonly prompt: string; readonly error: string };

export interface OpenedEngine {
  /** The name jobs use to ask for this model (`"model"` field). */
  readonly modelName: string;
  /** The built model directory. */
  readonly modelDir: string;
  readonly manifest: ModelManifest;
  /** e.g. "cpu" or "cuda:0". */
  readonly device: string;
  /** The token-level engine, for callers that tokenize themselves. */
  readonly engine: TextGenerationEngine;
  readonly tokenizer: TextTokenizer;
  /**
   * Generates for prompts (strings) or job fields (`{prompt, max_new_tokens, decoding, ...}`, validated as job
   * lines are): one result per input, in order, as one batch. Invalid fields throw; a prompt the model cannot
   * take (too long for its context) gets an `error` entry.
   */
  generate(inputs: readonly (string | JobInput)[]): Promise<TextGeneration[]>;
  /** Releases the sessions (and the thread). */
  close(): Promise<void>;
}

/**
 * Opens a model for generation without a queue: resolves it as `--model` does (building and caching a checkpoint
 * on first use), opens its sessions on the device, and returns text-in, text-out generation.
 */
export async function openEngine(options: OpenEngineOptions): Promise<OpenedEngine> {
  const config = configFrom(options);
  const model = await resolveModelArg(options.model, config, options.precision, undefined, typeof options.device === 'string' ? options.device : options.device && formatDevice(options.device));
  const device = typeof options.device === 'object' ? options.device : parseDevice(options.device ?? config.worker.device);
  const engineOptions = {
    device,
    deviceLoopMaxBatch: options.deviceLoopMaxBatch ?? config.worker.deviceLoopMaxBatch,
    ...(options.onWarning ? { onWarning: options.onWarning } : {}),
  };
  const tokenizer = TextTokenizer.fromFile(join(model.dir, model.manifest.files.tokenizer));
  const engine: TextGenerationEngine =
    options.thread === false ? await Generator.open(model.dir, engineOptions) : await ThreadedGenerator.open(model.dir, engineOptions);
  let closed: Promise<void> | undefined;
  return {
    modelName: model.name,
    modelDir: model.dir,
    manifest: model.manifest,
    device: engine.device,
    engine,
    tokenizer,
    async generate(inputs) {
      const jobs = inputs.map((input, i) => {
        try {
          return jobFromFields(typeof input === 'string' ? { prompt: input } : { ...input });
        } catch (e) {
          throw new Error(`input ${i}: ${(e as Error).message}`);
        }
      });
      const encoded = await tokenizer.encodeJobs(jobs);
      const { results } = await engine.generate(jobs.map((j, i) => generationRequestFor(j, encoded[i]!.ids)));
      return Promise.all(
        results.map(async (r, i): Promise<TextGeneration> => {
          const { text: prompt, ids } = encoded[i]!;
          if ('error' in r) return { prompt, error: r.error };
          return { prompt, promptTokenIds: ids, tokenIds: r.tokenIds, text: await tokenizer.decode(r.tokenIds), finishReason: r.finishReason };
        }),
      );
    },
    close() {
      closed ??= engine.close();
      return closed;
    },
  };
}
