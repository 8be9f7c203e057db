import { STATIC_KV, SEARCH_STEP_IO } from '../contract.js';
import type { AttrValue } from '../onnx/graph-builder.js';
import { ElemType, encodeFloats } from '../onnx/tensor-types.js';
import type { DecoderStep } from './decoder-step.js';
import { dynamicRotaryCaches, rotaryCaches } from './rotary.js';

/** A fused q/k/v projection: [hidden, 3 × hidden] weight and bias, produced on first use (initializer order). */
export interface PackedQkv {
  readonly weight: () => string;
  readonly bias: () => string;
  readonly numHeads: number;
  readonly scale: number;
}

/**
 * Multi-head attention over a packed q/k/v projection of `input`, with each step variant's cache:
 * growing/shared: com.microsoft Attention (fused projection, GPT-2 past/present, in place when shared);
 * static: MatMul + DecoderMaskedMultiHeadAttention; static-cpu and slots: MatMul + bias + GroupQueryAttention.
 * Values are named `${name}_*`; returns the attention output [batch, seq, hidden].
 */
export function packedQkvAttention(step: DecoderStep, name: string, i: number, input: string, p: PackedQkv): string {
  const { g, io } = step;
  if (io.isStatic) {
    const [qkv] = g.op('MatMul', [input, p.weight()], [`${name}_qkv`]);
    if (io.variant.kvCache === 'static') return maskedDecodeAttention(step, name, i, qkv!, p);
    // Its CPU kernel (ONNX Runtime 1.29) takes no packed QKV and, at past length 0, writes past the end of a
    // shared cache; GroupQueryAttention does the same job on the CPU (no bias input: the bias is its own Add).
    const [biased] = g.op('Add', [qkv!, p.bias()], [`${name}_qkv_biased`]);
    return g.msOp(
      'GroupQueryAttention',
      [biased!, '', '', STATIC_KV.pastKey(i), STATIC_KV.pastValue(i), io.seqlensK, io.totalSequenceLength],
      [`${name}_attn`, STATIC_KV.presentKey(i), STATIC_KV.presentValue(i)],
      { num_heads: p.numHeads, kv_num_heads: p.numHeads, scale: { float: p.scale } },
    )[0]!;
  }
  const shared = io.variant.kvCache === 'shared';
  const inputs = [input, p.weight(), p.bias(), io.mask, io.past[i]!];
  if (shared) inputs.push('', io.pastLength);
  return g.msOp('Attention', inputs, [`${name}_attn`, SEARCH_STEP_IO.present(i)], {
    num_heads: p.numHeads,
    unidirectional: 1,
    scale: { float: p.scale },
    ...(shared ? { past_present_share_buffer: 1 } : {}),
  })[0]!;
}

/**
 * DecoderMaskedMultiHeadAttention adds the q/k/v bias, appends K/V at past_sequence_length in place and attends,
 * all in one CUDA kernel (the static step on CUDA, and the small-batch step).
 */
export function maskedDecodeAttention(step: DecoderStep, name: string, i: number, qkv: string, p: PackedQkv): string {
  return step.g.msOp(
    'DecoderMaskedMultiHeadAttention',
    [qkv, '', '', '', '', STATIC_KV.pastKey(i), STATIC_KV.pastValue(i), step.io.pastLength, '', '', p.bias()],
    [`${name}_attn`, STATIC_KV.presentKey(i), STATIC_KV.presentValue(i)],
    { num_heads: p.numHeads, past_present_share_buffer: 1, scale: { float: p.scale } },
  )[0]!;
}

/** Separate q/k/v heads projected by one MatMul: [hidden, (numHeads + 2 · numKvHeads) · headSize], optional bias. */
export interface RotaryQkv {
  readonly weight: () => string;
  readonly bias?: (() => string) | undefined;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headSize: number;
}

/**
 * Attention with rotary positions and grouped K/V heads (Llama, Mistral, Qwen2), per step variant:
 * growing (search ops): RotaryEmbedding on q and k at the mask's positions, the new K/V appended to
 * past_i [2, batch, kv heads, past, head size] (so the cache holds kv heads only), each K/V head repeated for its
 * query heads and MultiHeadAttention with an additive bias for causality, left padding and a sliding window
 * (GroupQueryAttention takes no such bias on CUDA, and left-padded rows need it);
 * static/static-cpu (device loop): groupQueryAttention over the packed projection.
 */
export function rotaryAttention(step: DecoderStep, name: string, i: number, input: string, p: RotaryQkv): string {
  const { g, io } = step;
  const [projected] = g.op('MatMul', [input, p.weight()], [`${name}_qkv`]);
  const qkv = p.bias ? g.op('Add', [projected!, p.bias()], [`${name}_qkv_biased`])[0]! : projected!;
  if (io.isStatic) return groupQueryAttention(step, name, i, qkv, p);
  const rotary = ropeCaches(step);
  const scale = { float: 1 / Math.sqrt(p.headSize) };
  const { numHeads: N, numKvHeads: KVH, headSize: HS } = p;
  const [q, k, v] = g.op('Split', [qkv, g.int64s(`${name}_qkv_split`, [N * HS, KVH * HS, KVH * HS])], [`${name}_q`, `${name}_k`, `${name}_v`], { axis: -1 });
  const positions = step.once('rope_positions', () => g.op('Cast', [io.positions()], ['rope_position_ids'], { to: ElemType.int64 })[0]!);
  const [qr] = g.msOp('RotaryEmbedding', [q!, positions, rotary.cos, rotary.sin], [`${name}_q_rot`], { num_heads: N });
  const [kr] = g.msOp('RotaryEmbedding', [k!, positions, rotary.cos, rotary.sin], [`${name}_k_rot`], { num_heads: KVH });
  const [kvNew] = g.op('Concat', [kr!, v!], [`${name}_kv`], { axis: -1 });
  const [kv5] = g.op('Reshape', [kvNew!, step.once('kv_split_shape', () => g.int64s('kv_split_shape', [0, 0, 2, KVH, HS]))], [`${name}_kv5`]);
  const [kvHeads] = g.op('Transpose', [kv5!], [`${name}_kv_heads`], { perm: [2, 0, 3, 1, 4] });
  const [present] = g.op('Concat', [io.past[i]!, kvHeads!], [SEARCH_STEP_IO.present(i)], { axis: 3 });
  let kvAll = present!;
  if (N !== KVH) {
    // Each K/V head serves N / KVH consecutive query heads, as HF's repeat_kv orders them.
    const [grouped] = g.op('Reshape', [kvAll, step.once('kv_group_shape', () => g.int64s('kv_group_shape', [2, 0, KVH, 1, -1, HS]))], [`${name}_kv_grouped`]);
    const [repeated] = g.op('Expand', [grouped!, step.once('kv_repeat', () => g.int64s('kv_repeat', [1, 1, 1, N / KVH, 1, 1]))], [`${name}_kv_repeated`]);
    kvAll = g.op('Reshape', [repeated!, step.once('kv_heads_shape', () => g.int64s('kv_heads_shape', [2, 0, N, -1, HS]))], [`${name}_kv_all`])[0]!;
  }
  const [keys] = g.op('Gather', [kvAll, step.once('kv_index_k', () => g.int64s('kv_index_k', [0]))], [`${name}_keys5`], { axis: 0 });
  const [values] = g.op('Gather', [kvAll, step.once('kv_index_v', () => g.int64s('kv_index_v', [1]))], [`${name}_values5`], { axis: 0 });
  const squeeze = step.once('kv_squeeze_axis', () => g.int64s('kv_squeeze_axis', [0]));
  const [key] = g.op('Squeeze', [keys!, squeeze], [`${name}_keys`]);
  const [value] = g.op('Squeeze', [values!, squeeze], [`${name}_values`]);
  return g.msOp('MultiHeadAttention', [qr!, key!, value!, '', '', attentionBias(step)], [`${name}_attn`], { num_heads: N, scale })[0]!;
}

/**
 * The device loop's rotary attention over a packed q/k/v projection [batch, 1, (heads + 2 · kv heads) · head size]
 * (the static and slot steps, and the small-batch step): one GroupQueryAttention with its own rotary (do_rotary: the
 * position of each row comes from seqlens_k) writing the kv-head caches in place.
 */
export function groupQueryAttention(step: DecoderStep, name: string, i: number, qkv: string, p: RotaryQkv): string {
  const { g, io, spec } = step;
  const rotary = ropeCaches(step);
  const scale = { float: 1 / Math.sqrt(p.headSize) };
  const { numHeads: N, numKvHeads: KVH, headSize: HS } = p;
  // local_window_size counts the keys a query sees, as HF's sliding_window does (checked against Mistral on the CPU).
  const attrs: Record<string, AttrValue> = { num_heads: N, kv_num_heads: KVH, scale, ...(spec.slidingWindow ? { local_window_size: spec.slidingWindow } : {}) };
  const outputs = [`${name}_attn`, STATIC_KV.presentKey(i), STATIC_KV.presentValue(i)];
  const caches = [STATIC_KV.pastKey(i), STATIC_KV.pastValue(i), io.seqlensK, io.totalSequenceLength];
  // GroupQueryAttention's own rotary needs head sizes that are multiples of 16; others rotate q and k first,
  // at the rows' shared position (a [1] start offset).
  if (HS % 16 === 0) return g.msOp('GroupQueryAttention', [qkv, '', '', ...caches, rotary.cos, rotary.sin], outputs, { ...attrs, do_rotary: 1 })[0]!;
  const [q, k, v] = g.op('Split', [qkv, g.int64s(`${name}_qkv_split`, [N * HS, KVH * HS, KVH * HS])], [`${name}_q`, `${name}_k`, `${name}_v`], { axis: -1 });
  // The device loop's rows share a position (a [1] start offset); the slot steps' rows have one each ([batch, seq]).
  const start = io.variant.kvCache === 'slots' ? io.positions() : step.once('rope_start', () => g.op('Reshape', [io.positions(), g.int64s('rope_start_shape', [1])], ['rope_start'])[0]!);
  const [qr] = g.msOp('RotaryEmbedding', [q!, start, rotary.cos, rotary.sin], [`${name}_q_rot`], { num_heads: N });
  const [kr] = g.msOp('RotaryEmbedding', [k!, start, rotary.cos, rotary.sin], [`${name}_k_rot`], { num_heads: KVH });
  return g.msOp('GroupQueryAttention', [qr!, kr!, v!, ...caches], outputs, attrs)[0]!;
}

/**
 * Whether genqueue.DecodeAttention (native/decode-attention.h DecodeAttention::fits, repeated here for the builder)
 * takes this attention shape: head sizes 32-256 (a key is read in 16-byte pieces by one warp's lanes), at most 8
 * heads per kv head, and its shared memory within the 48 KiB a block gets without opting in.
 */
export function decodeAttentionFits(numHeads: number, kvHeads: number, headSize: number): boolean {
  const group = numHeads / kvHeads;
  const sharedBytes = 4 * (group * headSize + 8 * group * (headSize + 2));
  return Number.isInteger(group) && group >= 1 && group <= 8 && [32, 64, 128, 256].includes(headSize) && sharedBytes <= 48 * 1024;
}

/**
 * The small-batch step's rotary attention: one genqueue.DecodeAttention node (rotary, in-place append and attention
 * in one kernel) with GroupQueryAttention's inputs and outputs, where GroupQueryAttention runs four kernels.
 */
export function decodeAttention(step: DecoderStep, name: string, i: number, qkv: string, p: RotaryQkv): string {
  const { g, io, spec } = step;
  const rotary = ropeCaches(step);
  const attrs: Record<string, AttrValue> = {
    num_heads: p.numHeads,
    kv_num_heads: p.numKvHeads,
    head_size: p.headSize,
    scale: { float: 1 / Math.sqrt(p.headSize) },
    ...(spec.slidingWindow ? { local_window_size: spec.slidingWindow } : {}),
  };
  const inputs = [qkv, STATIC_KV.pastKey(i), STATIC_KV.pastValue(i), io.seqlensK, rotary.cos, rotary.sin];
  return g.genqueueOp('DecodeAttention', inputs, [`${name}_attn`, STATIC_KV.presentKey(i), STATIC_KV.presentValue(i)], attrs)[0]!;
}

/** The rotary cos/sin caches of the step: precomputed initializers, or computed per call for dynamic scaling. */
function ropeCaches(step: DecoderStep): { cos: string; sin: string } {
  return step.once('rope_caches', () => {
    const rope = step.spec.rope;
    if (!rope) throw new Error(`${step.spec.architecture}: rotary attention without rope parameters`);
    if (rope.type === 'dynamic') {
      if (step.io.isStatic) throw new Error('dynamic rope scaling has no static (device-loop) step');
      return dynamicRotaryCaches(step.g, rope, step.io.positions(), step.w.type);
    }
    return rotaryCaches(step.g, rope, step.spec.contextLength, step.w.precision, step.w.type);
  });
}

/**
 * The additive attention bias [batch, 1, seq, total] shared by every layer of a search step: 0 where query
 * position S-th-from-the-end may see key j (j at or before it, j not left padding, and within the sliding window
 * when there is one, counted in cache slots as HF does), a large negative value elsewhere.
 */
function attentionBias(step: DecoderStep): string {
  return step.once('attention_bias', () => {
    const { g, io, spec } = step;
    const i64 = (name: string, v: number): string => g.initializer(name, 'int64', [], new Uint8Array(BigInt64Array.of(BigInt(v)).buffer));
    const [total] = g.op('Shape', [io.mask], ['bias_total'], { start: 1, end: 2 });
    const [seq] = g.op('Shape', [io.inputIds], ['bias_seq'], { start: 1, end: 2 });
    const [totalScalar] = g.op('Squeeze', [total!], ['bias_total_scalar']);
    const [first] = g.op('Squeeze', [g.op('Sub', [total!, seq!], ['bias_first_query'])[0]!], ['bias_first_query_scalar']);
    const one = i64('bias_one', 1);
    const [keyIdx] = g.op('Range', [i64('bias_zero', 0), totalScalar!, one], ['bias_key_index']);
    const [queryIdx] = g.op('Range', [first!, totalScalar!, one], ['bias_query_index']);
    const [queryCol] = g.op('Unsqueeze', [queryIdx!, g.int64s('bias_col_axis', [1])], ['bias_query_col']);
    let [allowed] = g.op('LessOrEqual', [keyIdx!, queryCol!], ['bias_causal']);
    if (spec.slidingWindow) {
      const [oldest] = g.op('Sub', [queryCol!, i64('bias_window', spec.slidingWindow)], ['bias_window_start']);
      const [inWindow] = g.op('Greater', [keyIdx!, oldest!], ['bias_in_window']);
      [allowed] = g.op('And', [allowed!, inWindow!], ['bias_causal_window']);
    }
    const [padding] = g.op('Cast', [io.mask], ['bias_key_real'], { to: ElemType.bool });
    const [padding4] = g.op('Unsqueeze', [padding!, g.int64s('bias_mask_axes', [1, 2])], ['bias_key_real4']);
    const [visible] = g.op('And', [allowed!, padding4!], ['bias_visible']);
    const type = step.w.type;
    const scalar = (name: string, v: number): string => g.initializer(name, type, [], encodeFloats(Float32Array.of(v), step.w.precision));
    return g.op('Where', [visible!, scalar('bias_open', 0), scalar('bias_masked', -10000)], ['attention_bias'])[0]!;
  });
}
