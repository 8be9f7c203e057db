import { z } from 'zod';
import type { CheckpointTensors, HfCheckpoint } from '../checkpoint/hf-checkpoint.js';
import { type AttrValue, GraphBuilder } from '../onnx/graph-builder.js';
import { appendSamplingHead } from '../sampling-head.js';
import { ElemType, encodeFloats, floatElemType, transposeMatrix } from '../onnx/tensor-types.js';
import { type ArchitectureBuilder, type DecoderBuildOptions, type DecoderGraph, type DecoderSpec, SEARCH_DECODER } from './decoder-graph.js';

/** The GPT-2 config.json fields this builder uses; unsupported variants are refused by name. */
export const Gpt2Config = z.object({
  model_type: z.literal('gpt2'),
  n_embd: z.number().int().positive(),
  n_head: z.number().int().positive(),
  n_layer: z.number().int().positive(),
  n_positions: z.number().int().positive(),
  vocab_size: z.number().int().positive(),
  layer_norm_epsilon: z.number().positive().default(1e-5),
  activation_function: z.enum(['gelu_new', 'gelu_pytorch_tanh', 'gelu_fast', 'gelu']).default('gelu_new'),
  tie_word_embeddings: z.boolean().default(true),
  scale_attn_weights: z.boolean().default(true),
  scale_attn_by_inverse_layer_idx: z.boolean().default(false),
  add_cross_attention: z.literal(false).default(false),
  eos_token_id: z.number().int().nonnegative().default(50256),
  n_inner: z.number().int().positive().nullable().default(null),
});
export type Gpt2Config = z.infer<typeof Gpt2Config>;

export function parseGpt2Config(raw: Record<string, unknown>, where: string): Gpt2Config {
  const parsed = Gpt2Config.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${where}: ${issue?.path.join('.') || 'config'}: ${issue?.message ?? 'invalid GPT-2 config'}`);
  }
  if (parsed.data.n_embd % parsed.data.n_head !== 0) throw new Error(`${where}: n_embd must be divisible by n_head`);
  return parsed.data;
}

/**
 * Positions from the attention mask: the count of real tokens before each one (an exclusive cumulative sum),
 * for the last `seq` columns. ONNX Runtime's search ops derive first-step positions from input_ids != pad_token_id
 * instead, which misplaces every token after an <|endoftext|> inside a prompt (GPT-2's pad id is its EOS id).
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

/** HF saves GPT2LMHeadModel weights under "transformer." and GPT2Model without it; accept both. */
function tensorPrefix(tensors: CheckpointTensors): string {
  if (tensors.has('transformer.wte.weight')) return 'transformer.';
  if (tensors.has('wte.weight')) return '';
  throw new Error('checkpoint has no wte.weight (nor transformer.wte.weight): not a GPT-2 checkpoint');
}

/**
 * GPT-2 as one decoder step, built from ONNX Runtime's fused operators:
 * Gather embeddings → SkipLayerNormalization (adds token+position and applies ln_1) → per layer
 * Attention (fused QKV, GPT-2 past/present) → MatMul → SkipLayerNormalization (residual + bias + ln_2)
 * → MatMul → FastGelu (with bias) → MatMul → SkipLayerNormalization (residual + bias + next ln) →
 * last position only → FusedMatMul against wte (tied lm_head, no transposed copy).
 * With variant.matmul 'small-batch' every projection is genqueue.SmallBatchMatMul against [out, in] weights
 * (copies of GPT-2's [in, out] Conv1D weights under a ".t" name; wte already is [vocab, embd]).
 */
export function buildGpt2Graph(checkpoint: HfCheckpoint, options: DecoderBuildOptions): DecoderGraph {
  const cfg = parseGpt2Config(checkpoint.config, `${checkpoint.dir}/config.json`);
  const variant = options.variant ?? SEARCH_DECODER;
  const tensors = checkpoint.tensors;
  const prefix = tensorPrefix(tensors);
  const ft = floatElemType(options.precision);
  const D = cfg.n_embd;
  const NH = cfg.n_head;
  const HS = D / NH;
  const inner = cfg.n_inner ?? 4 * D;
  const g = new GraphBuilder('gpt2_decoder', options.weights);

  const weight = (name: string, expected: readonly number[]): string =>
    g.initializer(name, ft, expected, () => {
      const t = tensors.read(prefix + name);
      if (t.shape.join(',') !== expected.join(',')) {
        throw new Error(`tensor ${prefix}${name} has shape [${t.shape}], expected [${expected}]`);
      }
      return encodeFloats(t.data, options.precision);
    });

  const smallBatch = variant.matmul === 'small-batch';
  if (smallBatch && (options.precision !== 'fp16' || variant.kvCache !== 'static')) {
    throw new Error('matmul "small-batch" needs fp16 and the static (DecoderMaskedMultiHeadAttention) cache');
  }
  if (smallBatch && (inner % 8 !== 0 || D % 8 !== 0)) throw new Error(`matmul "small-batch" needs sizes that are multiples of 8 (n_embd ${D}, n_inner ${inner})`);
  // GPT-2's [K, N] Conv1D weight as an [N, K] copy, the layout SmallBatchMatMul reads.
  const transposedWeight = (name: string, k: number, n: number): string =>
    g.initializer(`${name}.t`, ft, [n, k], () => {
      const t = tensors.read(prefix + name);
      if (t.shape.join(',') !== [k, n].join(',')) throw new Error(`tensor ${prefix}${name} has shape [${t.shape}], expected [${k},${n}]`);
      return encodeFloats(transposeMatrix(t.data, k, n), options.precision);
    });

  const isStatic = variant.kvCache === 'static' || variant.kvCache === 'static-cpu';
  const cached = variant.kvCache !== 'none' && !isStatic;
  const shared = variant.kvCache === 'shared';
  const kvLen = shared ? 'max_seq' : 'past_seq';
  // The static step reads ids straight from the device loop's int64 token buffer (no Cast).
  const inputIds = g.input('input_ids', isStatic ? 'int64' : 'int32', ['batch', 'seq']);
  // Part of the search ops' contract, but not used there (see maskPositions). The static step's rows share one
  // position, so it passes [1, 1] and SkipLayerNormalization broadcasts it over the batch.
  const positionIds = cached ? g.input('position_ids', 'int32', ['batch', 'seq']) : isStatic ? g.input('position_ids', 'int64', [1, 1]) : '';
  const mask = isStatic ? '' : g.input('attention_mask', 'int32', ['batch', 'total_seq']);
  const past: string[] = [];
  if (cached) for (let i = 0; i < cfg.n_layer; i++) past.push(g.input(`past_${i}`, ft, [2, 'batch', NH, kvLen, HS]));
  // The filled length of a shared/static cache, read on the host: the attention writes the new position there, in place.
  const pastLength = shared || isStatic ? g.input('past_sequence_length', 'int32', [1]) : '';
  let seqlensK = '';
  let totalSeq = '';
  if (variant.kvCache === 'static-cpu') {
    // GroupQueryAttention's lengths: seqlens_k [B] = the shared position (from the device, like position_ids) and
    // total_sequence_length = the cache capacity (a shape, computed on the host), as the in-place cache needs.
    const [zeros] = g.op('Mul', [inputIds, g.int64s('gqa_zero', [0])], ['gqa_zeros']);
    const [lengths] = g.op('Add', [zeros!, positionIds], ['gqa_lengths']);
    const [lengths32] = g.op('Cast', [lengths!], ['gqa_lengths32'], { to: ElemType.int32 });
    seqlensK = g.op('Reshape', [lengths32!, g.int64s('gqa_lengths_shape', [-1])], ['gqa_seqlens_k'])[0]!;
    const [capacity] = g.op('Shape', ['past_key_0'], ['gqa_capacity'], { start: 2, end: 3 });
    totalSeq = g.op('Cast', [capacity!], ['gqa_total_sequence_length'], { to: ElemType.int32 })[0]!;
  }
  if (isStatic) {
    for (let i = 0; i < cfg.n_layer; i++) {
      g.input(`past_key_${i}`, ft, ['batch', NH, 'max_seq', HS]);
      g.input(`past_value_${i}`, ft, ['batch', NH, 'max_seq', HS]);
    }
  }
  if (variant.logits === 'argmax') g.output('next_token', 'int64', ['batch', 1]);
  else g.output('logits', ft, ['batch', variant.logits === 'all' ? 'seq' : 1, cfg.vocab_size]);
  if (cached) for (let i = 0; i < cfg.n_layer; i++) g.output(`present_${i}`, ft, [2, 'batch', NH, shared ? kvLen : 'total_seq', HS]);
  if (isStatic) {
    for (let i = 0; i < cfg.n_layer; i++) {
      g.output(`present_key_${i}`, ft, ['batch', NH, 'max_seq', HS]);
      g.output(`present_value_${i}`, ft, ['batch', NH, 'max_seq', HS]);
    }
  }

  const wte = weight('wte.weight', [cfg.vocab_size, D]);
  const wpe = weight('wpe.weight', [cfg.n_positions, D]);
  const [tok] = g.op('Gather', [wte, inputIds], ['tok_emb']);
  const [pos] = g.op('Gather', [wpe, isStatic ? positionIds : maskPositions(g, inputIds, mask)], ['pos_emb']);

  const eps = { float: cfg.layer_norm_epsilon };
  const untied = !cfg.tie_word_embeddings && tensors.has('lm_head.weight');
  const lmHead = untied
    ? g.initializer('lm_head.weight', ft, [cfg.vocab_size, D], () => encodeFloats(tensors.read('lm_head.weight').data, options.precision))
    : wte;
  const logitsName = variant.logits === 'argmax' || variant.logits === 'sample' ? 'last_logits' : 'logits';
  const gelu = cfg.activation_function === 'gelu' ? 'BiasGelu' : 'FastGelu';
  const attentionScale = (layer: number): number => {
    const scale = cfg.scale_attn_weights ? 1 / Math.sqrt(HS) : 1;
    return cfg.scale_attn_by_inverse_layer_idx ? scale / (layer + 1) : scale;
  };

  // DecoderMaskedMultiHeadAttention adds the QKV bias, appends K/V at past_sequence_length in place and attends,
  // all in one CUDA kernel.
  const maskedAttention = (i: number, qkv: string): string =>
    g.msOp(
      'DecoderMaskedMultiHeadAttention',
      [qkv, '', '', '', '', `past_key_${i}`, `past_value_${i}`, pastLength, '', '', weight(`h.${i}.attn.c_attn.bias`, [3 * D])],
      [`h${i}_attn`, `present_key_${i}`, `present_value_${i}`],
      { num_heads: NH, past_present_share_buffer: 1, scale: { float: attentionScale(i) } },
    )[0]!;

  // Every projection is one SmallBatchMatMul with the layer normalization before it, and bias, FastGelu or the
  // residual after it, folded in: per layer 4 of them and the attention, no SkipLayerNormalization.
  const smallBatchLayers = (): string => {
    const matmul = (inputs: string[], output: string, attrs: Record<string, AttrValue> = {}): string =>
      g.genqueueOp('SmallBatchMatMul', inputs, [output], attrs)[0]!;
    let x = g.op('Add', [tok!, pos!], ['embedded'])[0]!;
    for (let i = 0; i < cfg.n_layer; i++) {
      const h = `h.${i}.`;
      const ln1 = [weight(`${h}ln_1.weight`, [D]), weight(`${h}ln_1.bias`, [D])];
      const qkv = matmul([x, transposedWeight(`${h}attn.c_attn.weight`, D, 3 * D), '', '', ...ln1], `h${i}_qkv`, { epsilon: eps });
      const attn = maskedAttention(i, qkv);
      const x2 = matmul([attn, transposedWeight(`${h}attn.c_proj.weight`, D, D), weight(`${h}attn.c_proj.bias`, [D]), x], `h${i}_resid2`);
      const ln2 = [weight(`${h}ln_2.weight`, [D]), weight(`${h}ln_2.bias`, [D])];
      const fcWeight = transposedWeight(`${h}mlp.c_fc.weight`, D, inner);
      const fcBias = weight(`${h}mlp.c_fc.bias`, [inner]);
      const act =
        gelu === 'FastGelu'
          ? matmul([x2, fcWeight, fcBias, '', ...ln2], `h${i}_gelu`, { epsilon: eps, fast_gelu: 1 })
          : g.msOp(gelu, [matmul([x2, fcWeight, '', '', ...ln2], `h${i}_fc`, { epsilon: eps }), fcBias], [`h${i}_gelu`])[0]!;
      x = matmul([act, transposedWeight(`${h}mlp.c_proj.weight`, inner, D), weight(`${h}mlp.c_proj.bias`, [D]), x2], `h${i}_resid3`);
    }
    return matmul([x, lmHead, '', '', weight('ln_f.weight', [D]), weight('ln_f.bias', [D])], logitsName, { epsilon: eps });
  };
  if (smallBatch) {
    smallBatchLayers();
    return { graph: g.build(), nodeCount: g.nodeCount, spec: gpt2Spec(checkpoint, cfg, options) };
  }

  let [normed, , , residual] = g.msOp(
    'SkipLayerNormalization',
    [tok!, pos!, weight('h.0.ln_1.weight', [D]), weight('h.0.ln_1.bias', [D])],
    ['h0_ln1', '', '', 'h0_resid'],
    { epsilon: eps },
  );

  for (let i = 0; i < cfg.n_layer; i++) {
    const h = `h.${i}.`;
    const scale = attentionScale(i);
    let attn: string | undefined;
    if (isStatic) {
      const [qkv] = g.op('MatMul', [normed!, weight(`${h}attn.c_attn.weight`, [D, 3 * D])], [`h${i}_qkv`]);
      if (variant.kvCache === 'static') {
        attn = maskedAttention(i, qkv!);
      } else {
        // Its CPU kernel (ONNX Runtime 1.29) takes no packed QKV and, at past length 0, writes past the end of a
        // shared cache; GroupQueryAttention does the same job on the CPU (no bias input: the bias is its own Add).
        const [biased] = g.op('Add', [qkv!, weight(`${h}attn.c_attn.bias`, [3 * D])], [`h${i}_qkv_biased`]);
        [attn] = g.msOp(
          'GroupQueryAttention',
          [biased!, '', '', `past_key_${i}`, `past_value_${i}`, seqlensK, totalSeq],
          [`h${i}_attn`, `present_key_${i}`, `present_value_${i}`],
          { num_heads: NH, kv_num_heads: NH, scale: { float: scale } },
        );
      }
    } else {
      const attnInputs = [normed!, weight(`${h}attn.c_attn.weight`, [D, 3 * D]), weight(`${h}attn.c_attn.bias`, [3 * D]), mask];
      if (cached) attnInputs.push(past[i]!);
      if (shared) attnInputs.push('', pastLength);
      [attn] = g.msOp('Attention', attnInputs, cached ? [`h${i}_attn`, `present_${i}`] : [`h${i}_attn`], {
        num_heads: NH,
        unidirectional: 1,
        scale: { float: scale },
        ...(shared ? { past_present_share_buffer: 1 } : {}),
      });
    }
    const [proj] = g.op('MatMul', [attn!, weight(`${h}attn.c_proj.weight`, [D, D])], [`h${i}_attn_proj`]);
    const [ln2, , , resid2] = g.msOp(
      'SkipLayerNormalization',
      [proj!, residual!, weight(`${h}ln_2.weight`, [D]), weight(`${h}ln_2.bias`, [D]), weight(`${h}attn.c_proj.bias`, [D])],
      [`h${i}_ln2`, '', '', `h${i}_resid2`],
      { epsilon: eps },
    );
    const [fc] = g.op('MatMul', [ln2!, weight(`${h}mlp.c_fc.weight`, [D, inner])], [`h${i}_fc`]);
    const [act] = g.msOp(gelu, [fc!, weight(`${h}mlp.c_fc.bias`, [inner])], [`h${i}_gelu`]);
    const [mlp] = g.op('MatMul', [act!, weight(`${h}mlp.c_proj.weight`, [inner, D])], [`h${i}_mlp`]);
    const last = i === cfg.n_layer - 1;
    const nextLn = last ? 'ln_f.' : `h.${i + 1}.ln_1.`;
    [normed, , , residual] = g.msOp(
      'SkipLayerNormalization',
      [mlp!, resid2!, weight(`${nextLn}weight`, [D]), weight(`${nextLn}bias`, [D]), weight(`${h}mlp.c_proj.bias`, [D])],
      [last ? 'final_ln' : `h${i + 1}_ln1`, '', '', last ? '' : `h${i + 1}_resid`],
      { epsilon: eps },
    );
  }

  // Only the last position's logits are used by the search ops; projecting the whole prompt would waste the largest matmul.
  const projected =
    variant.logits === 'all' || isStatic
      ? normed!
      : g.op('Slice', [normed!, g.int64s('slice_start', [-1]), g.int64s('slice_end', [2 ** 62]), g.int64s('slice_axis', [1])], [
          'last_hidden',
        ])[0]!;
  const [logits] = g.msOp('FusedMatMul', [projected, lmHead], [logitsName], { transB: 1, alpha: { float: 1 } });
  if (variant.logits === 'argmax') g.op('ArgMax', [logits!], ['next_token'], { axis: -1, keepdims: 0 });
  if (variant.logits === 'sample') appendSamplingHead(g, logits!, ft, cfg.vocab_size, 'logits');

  return { graph: g.build(), nodeCount: g.nodeCount, spec: gpt2Spec(checkpoint, cfg, options) };
}

function gpt2Spec(checkpoint: HfCheckpoint, cfg: Gpt2Config, options: DecoderBuildOptions): DecoderSpec {
  const eos = checkpoint.generation.eos_token_id;
  const eosTokenId = typeof eos === 'number' ? eos : (eos?.[0] ?? cfg.eos_token_id);
  const pad = checkpoint.generation.pad_token_id;
  return {
    architecture: 'gpt2',
    numLayers: cfg.n_layer,
    numHeads: cfg.n_head,
    headSize: cfg.n_embd / cfg.n_head,
    hiddenSize: cfg.n_embd,
    vocabSize: cfg.vocab_size,
    contextLength: cfg.n_positions,
    eosTokenId,
    padTokenId: pad ?? eosTokenId,
    precision: options.precision,
  };
}

export const gpt2Architecture: ArchitectureBuilder = {
  modelTypes: ['gpt2'],
  buildDecoder: buildGpt2Graph,
};
