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

/**
 * The shape of one decoder step graph. The product uses {growing|shared, last}; the other combinations exist
 * for the benchmarks that reproduce the write-up's baselines.
 */
export interface DecoderVariant {
  /**
   * growing: past/present grow by one position per step (CPU and CUDA);
   * shared: past and present are one max-length buffer written in place (past_present_share_buffer; CUDA only);
   * none: no cache inputs/outputs, the whole sequence is recomputed every step;
   * static: one token per step into fixed-size past_key_i/past_value_i [batch, heads, max_seq, head_size]
   * buffers written in place at past_sequence_length (a CPU scalar) by com.microsoft
   * DecoderMaskedMultiHeadAttention with packed QKV (inputs input_ids int64 [B,1], position_ids int64 [1,1]).
   * Every shape is fixed, so steps can be captured as CUDA graphs (device-loop-graph.ts);
   * static-cpu: the same contract with com.microsoft GroupQueryAttention, for the CPU provider (see gpt2.ts).
   */
  readonly kvCache: 'growing' | 'shared' | 'none' | 'static' | 'static-cpu';
  /**
   * last: logits [B,1,V]; all: logits [B,S,V]; argmax: only next_token [B,1] (int64) leaves the graph;
   * sample: last-position logits with the sampling head (sampling-head.ts), for GreedySearch to argmax.
   */
  readonly logits: 'last' | 'all' | 'argmax' | 'sample';
  /**
   * onnx (default): MatMul / FusedMatMul with ONNX Runtime's normalizations; small-batch (fp16, kvCache static):
   * every projection is one genqueue.SmallBatchMatMul against an [out, in] weight copy, with the layer
   * normalization before it and bias, FastGelu or residual after it folded in — at most 2 rows; registered only
   * by the native device-loop addon on CUDA (native/small-batch-matmul.h).
   */
  readonly matmul?: 'onnx' | 'small-batch';
}

export const SEARCH_DECODER: DecoderVariant = { kvCache: 'growing', logits: 'last' };

export interface DecoderBuildOptions {
  readonly precision: FloatPrecision;
  readonly weights: WeightFile;
  readonly variant?: DecoderVariant;
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
