import type { DecoderVariant } from '../architectures/architecture.js';
import { SEARCH_STEP_IO, SLOT_STEP_IO, STATIC_KV } from '../contract.js';
import type { GraphBuilder } from '../onnx/graph-builder.js';
import { type ElemTypeName, ElemType } from '../onnx/tensor-types.js';

/** The sizes a step's inputs and outputs depend on. */
export interface StepDims {
  readonly numLayers: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  readonly vocabSize: number;
  readonly floatType: ElemTypeName;
}

/** The step graph's inputs (value names; '' where a variant has none) and derived per-step values. */
export interface StepIo {
  readonly variant: DecoderVariant;
  /**
   * growing/shared: the search ops' GPT subgraph contract; static/static-cpu: the device loop's step; slots: the
   * slot engine's steps. Static steps write in-place caches [batch, kv heads, capacity, head size].
   */
  readonly isStatic: boolean;
  readonly inputIds: string;
  readonly positionIds: string;
  readonly mask: string;
  /** past_i [2, batch, kv heads, past (shared: max), head size] (growing/shared). */
  readonly past: readonly string[];
  /** The filled length of a shared or static cache (host scalar). */
  readonly pastLength: string;
  /** GroupQueryAttention's lengths for the static steps (see declareStepIo). */
  readonly seqlensK: string;
  readonly totalSequenceLength: string;
  /** Position of each input token ([1,1] int64 for the static steps, [batch, seq] int32 from the mask otherwise); built on first use. */
  positions(): string;
}

/**
 * Declares a step variant's inputs and outputs, in the order ONNX Runtime's search operators expect them
 * (input_ids, position_ids, attention_mask, past_i → logits, present_i) or the device loop binds them.
 */
export function declareStepIo(g: GraphBuilder, variant: DecoderVariant, d: StepDims): StepIo {
  const io = SEARCH_STEP_IO;
  const ft = d.floatType;
  const KVH = d.numKvHeads;
  const HS = d.headSize;
  const slots = variant.kvCache === 'slots';
  const isStatic = variant.kvCache === 'static' || variant.kvCache === 'static-cpu' || slots;
  const shared = variant.kvCache === 'shared';
  const kvLen = shared ? 'max_seq' : 'past_seq';
  // The static step reads ids straight from the device loop's int64 token buffer (no Cast).
  const inputIds = g.input(slots ? SLOT_STEP_IO.inputIds : io.inputIds, isStatic ? 'int64' : 'int32', ['batch', 'seq']);
  // Part of the search ops' contract, but not used there (see maskPositions). The device loop's rows share one
  // position, so it passes [1, 1], which broadcasts over the batch; the slot steps' rows each have their own.
  const positionIds = slots
    ? g.input(SLOT_STEP_IO.positionIds, 'int64', ['batch', 'seq'])
    : isStatic
      ? g.input(io.positionIds, 'int64', [1, 1])
      : g.input(io.positionIds, 'int32', ['batch', 'seq']);
  const mask = isStatic ? '' : g.input(io.attentionMask, 'int32', ['batch', 'total_seq']);
  const past: string[] = [];
  if (!isStatic) for (let i = 0; i < d.numLayers; i++) past.push(g.input(io.past(i), ft, [2, 'batch', KVH, kvLen, HS]));
  // The filled length of a shared/static cache, read on the host: the attention writes the new position there, in place.
  const pastLength = shared || (isStatic && !slots) ? g.input(io.pastSequenceLength, 'int32', [1]) : '';
  let seqlensK = '';
  let totalSequenceLength = '';
  if (variant.kvCache === 'static-cpu') {
    // GroupQueryAttention's lengths: seqlens_k [B] = the shared position (from the device, like position_ids) and
    // total_sequence_length = the cache capacity (a shape, computed on the host), as the in-place cache needs.
    const [zeros] = g.op('Mul', [inputIds, g.int64s('gqa_zero', [0])], ['gqa_zeros']);
    const [lengths] = g.op('Add', [zeros!, positionIds], ['gqa_lengths']);
    const [lengths32] = g.op('Cast', [lengths!], ['gqa_lengths32'], { to: ElemType.int32 });
    seqlensK = g.op('Reshape', [lengths32!, g.int64s('gqa_lengths_shape', [-1])], ['gqa_seqlens_k'])[0]!;
    const [capacity] = g.op('Shape', [STATIC_KV.pastKey(0)], ['gqa_capacity'], { start: 2, end: 3 });
    totalSequenceLength = g.op('Cast', [capacity!], ['gqa_total_sequence_length'], { to: ElemType.int32 })[0]!;
  }
  if (slots) {
    // Every row's length from the slot engine's state, and the attended length as a host scalar (the capacity when
    // decoding, the chunk's end when prefilling): nothing about a row's position is in the graph's shapes.
    seqlensK = g.input(SLOT_STEP_IO.seqlensK, 'int32', ['batch']);
    totalSequenceLength = g.input(SLOT_STEP_IO.totalSequenceLength, 'int32', [1]);
  }
  if (isStatic) {
    for (let i = 0; i < d.numLayers; i++) {
      g.input(STATIC_KV.pastKey(i), ft, ['batch', KVH, 'max_seq', HS]);
      g.input(STATIC_KV.pastValue(i), ft, ['batch', KVH, 'max_seq', HS]);
    }
  }
  g.output(io.logits, ft, ['batch', 1, d.vocabSize]);
  if (!isStatic) for (let i = 0; i < d.numLayers; i++) g.output(io.present(i), ft, [2, 'batch', KVH, shared ? kvLen : 'total_seq', HS]);
  if (isStatic) {
    for (let i = 0; i < d.numLayers; i++) {
      g.output(STATIC_KV.presentKey(i), ft, ['batch', KVH, 'max_seq', HS]);
      g.output(STATIC_KV.presentValue(i), ft, ['batch', KVH, 'max_seq', HS]);
    }
  }
  let positions = '';
  return {
    variant,
    isStatic,
    inputIds,
    positionIds,
    mask,
    past,
    pastLength,
    seqlensK,
    totalSequenceLength,
    positions: () => (positions ||= isStatic ? positionIds : maskPositions(g, inputIds, mask)),
  };
}

/**
 * Positions from the attention mask: the count of real tokens before each one (an exclusive cumulative sum),
 * for the last `seq` columns. ONNX Runtime's search ops derive first-step positions from input_ids != pad_token_id
 * instead, which misplaces every token after an EOS inside a prompt when the pad id is the EOS id (GPT-2, Llama).
 */
function maskPositions(g: GraphBuilder, inputIds: string, mask: string): string {
  const [counts] = g.op('CumSum', [mask, g.int32s('cumsum_axis', [1], [])], ['mask_cumsum'], { exclusive: 1 });
  const [seqLen] = g.op('Shape', [inputIds], ['seq_len'], { start: 1, end: 2 });
  const [negSeqLen] = g.op('Neg', [seqLen!], ['neg_seq_len']);
  const [positions] = g.op('Slice', [counts!, negSeqLen!, g.int64s('pos_slice_end', [2 ** 62]), g.int64s('pos_slice_axis', [1])], [
    'positions',
  ]);
  return positions!;
}
