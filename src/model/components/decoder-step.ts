import type { DecoderArchitecture, DecoderCapabilities, DecoderGraph, DecoderSpec, DecoderVariant } from '../architectures/architecture.js';
import { SEARCH_DECODER } from '../architectures/architecture.js';
import type { HfCheckpoint } from '../checkpoint/hf-checkpoint.js';
import { GraphBuilder } from '../onnx/graph-builder.js';
import { type FloatPrecision, floatElemType } from '../onnx/tensor-types.js';
import type { WeightFile } from '../onnx/weight-file.js';
import { appendLogitsHead } from './heads.js';
import { declareStepIo, type StepIo } from './step-io.js';
import { WeightLoader } from './weights.js';

/** Between layers: the normalized input of the next block and the residual stream it adds to. */
export interface LayerState {
  readonly normed: string;
  readonly residual: string;
}

/** What an architecture's pieces build with: the graph, the checkpoint's weights, the variant's inputs/outputs. */
export interface DecoderStep {
  readonly g: GraphBuilder;
  readonly w: WeightLoader;
  readonly io: StepIo;
  readonly spec: DecoderSpec;
  readonly capabilities: DecoderCapabilities;
  /** A value every layer uses (rotary caches, the attention bias), built once per step graph on first use. */
  once<T>(key: string, make: () => T): T;
}

export interface DecoderBuildOptions {
  readonly precision: FloatPrecision;
  readonly weights: WeightFile;
  readonly variant?: DecoderVariant;
}

/**
 * One decoder step graph of an architecture in one variant: the variant's inputs and outputs, the architecture's
 * embeddings and layers, and the logits head. Weights go to the shared weight file, each read once across variants.
 */
export function buildDecoderStep(arch: DecoderArchitecture, checkpoint: HfCheckpoint, options: DecoderBuildOptions): DecoderGraph {
  const variant = options.variant ?? SEARCH_DECODER;
  const spec: DecoderSpec = { ...arch.spec, precision: options.precision };
  const caps = arch.capabilities;
  const g = new GraphBuilder(arch.graphName, options.weights);
  const smallBatch = variant.matmul === 'small-batch';
  if (smallBatch) {
    if (!caps.smallBatchStep || !arch.smallBatchStep) throw new Error(`${spec.architecture} has no small-batch step`);
    // The operator reads fp16 only (the builder makes this variant for fp16 builds); an fp32 graph of it serves the
    // tests that replace the operator by the standard ones it folds (test/harness/small-batch-spec.ts).
    if (variant.kvCache !== 'static' && variant.kvCache !== 'static-cpu') throw new Error('matmul "small-batch" needs a static (device-loop) cache');
  }
  if (variant.kvCache === 'shared' && !caps.sharedKvSearch) throw new Error(`${spec.architecture} has no shared-KV search step`);
  if (variant.kvCache === 'static' && !caps.maskedDecodeAttention) throw new Error(`${spec.architecture}: the static step needs DecoderMaskedMultiHeadAttention; use static-cpu`);
  if (variant.kvCache === 'slots' && !caps.deviceLoop) throw new Error(`${spec.architecture} has no slot-engine step (it needs the device loop's GroupQueryAttention step)`);
  const w = new WeightLoader(g, checkpoint.tensors, options.precision, arch.tensorPrefix);
  const io = declareStepIo(g, variant, {
    numLayers: spec.numLayers,
    numKvHeads: spec.numKvHeads,
    headSize: spec.headSize,
    vocabSize: spec.vocabSize,
    floatType: floatElemType(options.precision),
  });
  const shared = new Map<string, unknown>();
  const once = <T>(key: string, make: () => T): T => {
    if (!shared.has(key)) shared.set(key, make());
    return shared.get(key) as T;
  };
  const step: DecoderStep = { g, w, io, spec, capabilities: caps, once };
  if (smallBatch) {
    arch.smallBatchStep!(step);
  } else {
    let x = arch.embed(step);
    for (let i = 0; i < spec.numLayers; i++) x = arch.layer(step, i, x);
    appendLogitsHead(step, x.normed, arch.lmHead(step));
  }
  return { graph: g.build(), nodeCount: g.nodeCount, spec, capabilities: caps };
}
