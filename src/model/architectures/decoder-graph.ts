import type onnxProto from 'onnx-proto';
import type { HfCheckpoint } from '../checkpoint/hf-checkpoint.js';
import type { FloatPrecision } from '../onnx/tensor-types.js';
import type { WeightFile } from '../onnx/weight-file.js';

/** What the rest of the system needs to know about a built decoder, written next to the model as JSON. */
export interface DecoderSpec {
  readonly architecture: string;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly headSize: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  /** Longest prompt + generated length the position embeddings allow. */
  readonly contextLength: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly precision: FloatPrecision;
}

export interface DecoderBuildOptions {
  readonly precision: FloatPrecision;
  readonly weights: WeightFile;
}

/**
 * A decoder step graph with the signature ONNX Runtime's GreedySearch/BeamSearch expect for a GPT-style
 * model (model_type 0): inputs input_ids, position_ids, attention_mask (int32) and past_i
 * [2, batch, heads, past, head_size]; outputs logits [batch, 1, vocab] (last position only) and present_i.
 */
export interface DecoderGraph {
  readonly graph: onnxProto.onnx.IGraphProto;
  readonly spec: DecoderSpec;
  readonly nodeCount: number;
}

/** One file per architecture implements this. */
export interface ArchitectureBuilder {
  readonly modelTypes: readonly string[];
  buildDecoder(checkpoint: HfCheckpoint, options: DecoderBuildOptions): DecoderGraph;
}
