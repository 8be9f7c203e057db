import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { architectureFor } from '../model/architectures/registry.js';
import type { DecoderVariant } from '../model/architectures/decoder-graph.js';
import { openHfCheckpoint } from '../model/checkpoint/hf-checkpoint.js';
import {
  GPT2_LARGE_SHAPE,
  GPT2_SMALL_SHAPE,
  type RandomGpt2Shape,
  writeRandomGpt2Checkpoint,
} from '../model/checkpoint/random-gpt2-checkpoint.js';
import { ModelCache, type ResolvedModel } from '../model/model-cache.js';
import { encodeModel } from '../model/onnx/graph-builder.js';
import type { FloatPrecision } from '../model/onnx/tensor-types.js';
import { WeightFile } from '../model/onnx/weight-file.js';

export type BenchModelShape = 'tiny' | 'small' | 'large';

const SHAPES: Record<BenchModelShape, RandomGpt2Shape> = {
  tiny: { layers: 2, heads: 4, embd: 64, positions: 1024, vocab: 50257, seed: 1, init: 0.02 },
  small: GPT2_SMALL_SHAPE,
  large: GPT2_LARGE_SHAPE,
};

export function shapeParameters(shape: BenchModelShape): RandomGpt2Shape {
  return SHAPES[shape];
}

/** A random checkpoint of the given GPT-2 shape under workDir (made once, then reused). */
export function benchCheckpoint(workDir: string, shape: BenchModelShape): string {
  const dir = join(workDir, `gpt2-${shape}-random`);
  if (!existsSync(join(dir, 'config.json'))) writeRandomGpt2Checkpoint(dir, SHAPES[shape]);
  return dir;
}

/** The product build of a checkpoint (search graphs + manifest), through the model cache. */
export function benchModel(workDir: string, checkpoint: string, precision: FloatPrecision): Promise<ResolvedModel> {
  return new ModelCache(join(workDir, 'cache')).resolve(checkpoint, precision);
}

export const BASELINE_VARIANTS = {
  /** The write-up's "standard API": no cache, full logits for every position. */
  naive: { kvCache: 'none', logits: 'all' },
  /** No cache, only the next token id leaves the graph. */
  argmaxNoCache: { kvCache: 'none', logits: 'argmax' },
  /** KV cache returned to the host and fed back each step, last-position logits. */
  hostKv: { kvCache: 'growing', logits: 'last' },
} as const satisfies Record<string, DecoderVariant>;
export type BaselineName = keyof typeof BASELINE_VARIANTS;

/** Standalone decoder-step models for the host-loop baselines, sharing one weight file per precision. */
export function baselineDecoders(workDir: string, checkpoint: string, precision: FloatPrecision): Record<BaselineName, string> {
  const dir = join(workDir, `baselines-${precision}-${checkpoint.split('/').pop()}`);
  const paths = Object.fromEntries(Object.keys(BASELINE_VARIANTS).map((k) => [k, join(dir, `${k}.onnx`)])) as Record<BaselineName, string>;
  if (Object.values(paths).every((p) => existsSync(p))) return paths;
  mkdirSync(dir, { recursive: true });
  const ckpt = openHfCheckpoint(checkpoint);
  const builder = architectureFor(ckpt.modelType);
  const weights = new WeightFile(join(dir, 'weights.onnx.data'));
  try {
    for (const [name, variant] of Object.entries(BASELINE_VARIANTS) as [BaselineName, DecoderVariant][]) {
      const decoder = builder.buildDecoder(ckpt, { precision, weights, variant });
      writeFileSync(paths[name], encodeModel(decoder.graph, 'genqueue-bench'));
    }
  } finally {
    weights.close();
  }
  return paths;
}
