import { STATIC_KV, SEARCH_STEP_IO } from '../contract.js';
import type { DecoderStep } from './decoder-step.js';

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
 * static: MatMul + DecoderMaskedMultiHeadAttention; static-cpu: MatMul + bias + GroupQueryAttention.
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
