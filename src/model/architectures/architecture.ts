import type onnxProto from 'onnx-proto';
import type { HfCheckpoint } from '../checkpoint/hf-checkpoint.js';
import type { DecoderStep, LayerState } from '../components/decoder-step.js';
import type { RopeSpec } from '../components/rotary.js';
import type { FloatPrecision } from '../onnx/tensor-types.js';

/**
 * What an architecture declares about its decoder, so that the builder, the device-loop step and the engine
 * read it instead of guessing from sizes.
 */
export interface DecoderCapabilities {
  /** mha: every head has its own K/V; gqa: numKvHeads < numHeads query heads share each K/V head. */
  readonly attention: 'mha' | 'gqa';
  /** learned: a position embedding table; rotary: RoPE on q and k (spec.rope). */
  readonly positions: 'learned' | 'rotary';
  readonly norm: 'layernorm' | 'rmsnorm';
  readonly activation: 'gelu' | 'gelu_new' | 'silu';
  /** Which projections carry a bias. */
  readonly bias: { readonly qkv: boolean; readonly attentionOutput: boolean; readonly mlp: boolean };
  readonly tiedLmHead: boolean;
  /**
   * The step variants this architecture builds: shared-KV GreedySearch (CUDA), the device loop's static steps,
   * the small-batch static step (genqueue.SmallBatchMatMul, fp16 CUDA; its projections' shapes fit the kernel).
   */
  readonly sharedKvSearch: boolean;
  readonly deviceLoop: boolean;
  readonly smallBatchStep: boolean;
  /** Packed-QKV DecoderMaskedMultiHeadAttention for the CUDA static step (no rotary, MHA only). */
  readonly maskedDecodeAttention: boolean;
}

/** What the rest of the system needs to know about a built decoder, written next to the model as JSON. */
export interface DecoderSpec {
  readonly architecture: string;
  readonly numLayers: number;
  readonly numHeads: number;
  /** K/V heads (= numHeads without grouped-query attention): the caches are [.., numKvHeads, .., headSize]. */
  readonly numKvHeads: number;
  readonly headSize: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  /** Longest prompt + generated length the positions allow. */
  readonly contextLength: number;
  /** The first of eosTokenIds: the id the search operators and the device loop end rows on in-graph. */
  readonly eosTokenId: number;
  /** Every end-of-sequence id of generation_config.json (the decoders fold the others onto the first). */
  readonly eosTokenIds: readonly number[];
  readonly bosTokenId?: number | undefined;
  readonly padTokenId: number;
  /** Rotary position embedding parameters (positions 'rotary'), null for learned positions. */
  readonly rope: RopeSpec | null;
  /** Attention to at most this many most recent positions (Mistral), or null. */
  readonly slidingWindow: number | null;
  readonly precision: FloatPrecision;
}

/**
 * The shape of one decoder step graph that the product uses.
 * kvCache growing: past_i/present_i [2, batch, kv heads, past, head size] grow by one position per step
 * (ONNX Runtime's GPT subgraph contract for GreedySearch/BeamSearch); shared: past and present are one max-length
 * buffer written in place (past_present_share_buffer; CUDA only); static: one token per step into fixed-size
 * past_key_i/past_value_i [batch, kv heads, max_seq, head size] buffers written in place at the shared position
 * (inputs input_ids int64 [B,1], position_ids int64 [1,1]), with DecoderMaskedMultiHeadAttention (CUDA); every
 * shape is fixed, so steps can be captured as CUDA graphs (device-loop-graph.ts); static-cpu: the same contract
 * with com.microsoft GroupQueryAttention (the CPU provider, and CUDA where DecoderMaskedMultiHeadAttention does
 * not fit); slots: the static-cpu contract with a position per row (input_ids and position_ids int64 [batch, seq],
 * seqlens_k int32 [batch] and total_sequence_length int32 [1] as inputs), the slot engine's steps
 * (slot-step-graph.ts), with raw logits: genqueue.NextToken handles every EOS id itself.
 */
export interface DecoderVariant {
  readonly kvCache: 'growing' | 'shared' | 'static' | 'static-cpu' | 'slots';
  /** last: logits [B,1,V]; sample: last-position logits with the sampling head (sampling-head.ts), for GreedySearch to argmax. */
  readonly logits: 'last' | 'sample';
  /**
   * onnx (default): MatMul / FusedMatMul with ONNX Runtime's normalizations; small-batch (fp16, a static cache:
   * the one the regular CUDA step uses): every projection is one genqueue.SmallBatchMatMul against [out, in]
   * weights, with the normalization before it and bias, FastGelu/SwiGLU or residual after it folded in — at most
   * 2 rows; registered only by the native device-loop addon on CUDA (native/small-batch-matmul.h).
   */
  readonly matmul?: 'onnx' | 'small-batch';
}

export const SEARCH_DECODER: DecoderVariant = { kvCache: 'growing', logits: 'last' };

/** One decoder step graph, with the spec and capabilities of the model it came from. */
export interface DecoderGraph {
  readonly graph: onnxProto.onnx.IGraphProto;
  readonly spec: DecoderSpec;
  readonly capabilities: DecoderCapabilities;
  readonly nodeCount: number;
}

/**
 * One checkpoint read as an architecture: its config validated (errors name the field), and the pieces that make
 * its decoder step — the embeddings, one layer, the normalizations (norm(numLayers) is the final one, which the
 * last layer applies) and the lm_head. What every architecture repeats (step inputs/outputs, positions, masks,
 * attention with its caches, heads) comes from src/model/components.
 */
export interface DecoderArchitecture {
  /** The spec without the build's precision. */
  readonly spec: Omit<DecoderSpec, 'precision'>;
  readonly capabilities: DecoderCapabilities;
  /** The prefix of the step graph's name and its node names. */
  readonly graphName: string;
  /** Where the checkpoint's tensor names start (HF saves some models with a module prefix). */
  readonly tensorPrefix: string;
  /** The embedded input ids, with the first layer's input normalization applied. */
  embed(step: DecoderStep): LayerState;
  /** Layer i: from its normalized input and residual stream to the next layer's (or, for the last, the final norm's). */
  layer(step: DecoderStep, i: number, x: LayerState): LayerState;
  /** The [vocab, hidden] matrix the logits are computed against (transposed in the product). */
  lmHead(step: DecoderStep): string;
  /** The whole small-batch static step (capabilities.smallBatchStep); returns the logits value. */
  smallBatchStep?(step: DecoderStep): string;
}

/** One file per architecture implements this and registers in registry.ts. */
export interface ArchitectureDefinition {
  readonly modelTypes: readonly string[];
  open(checkpoint: HfCheckpoint): DecoderArchitecture;
}
