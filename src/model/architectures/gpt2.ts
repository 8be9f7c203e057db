import { z } from 'zod';
import type { CheckpointTensors, HfCheckpoint } from '../checkpoint/hf-checkpoint.js';
import { maskedDecodeAttention, packedQkvAttention, type PackedQkv } from '../components/attention.js';
import type { DecoderStep, LayerState } from '../components/decoder-step.js';
import { appendSmallBatchLogits } from '../components/heads.js';
import { generationTokenIds, parseConfig } from '../components/model-config.js';
import { smallBatchFits, smallBatchMatMul } from '../components/small-batch.js';
import type { AttrValue } from '../onnx/graph-builder.js';
import type { ArchitectureDefinition, DecoderArchitecture, DecoderCapabilities, DecoderSpec } from './architecture.js';

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
  bos_token_id: z.number().int().nonnegative().optional(),
  n_inner: z.number().int().positive().nullable().default(null),
});
export type Gpt2Config = z.infer<typeof Gpt2Config>;

/** HF saves GPT2LMHeadModel weights under "transformer." and GPT2Model without it; accept both. */
function tensorPrefix(tensors: CheckpointTensors): string {
  if (tensors.has('transformer.wte.weight')) return 'transformer.';
  if (tensors.has('wte.weight')) return '';
  throw new Error('checkpoint has no wte.weight (nor transformer.wte.weight): not a GPT-2 checkpoint');
}

/**
 * GPT-2 from ONNX Runtime's fused operators: Gather embeddings → SkipLayerNormalization (adds token+position and
 * applies ln_1) → per layer Attention (fused QKV, GPT-2 past/present) → MatMul → SkipLayerNormalization
 * (residual + bias + ln_2) → MatMul → FastGelu (with bias) → MatMul → SkipLayerNormalization (residual + bias +
 * next ln) → last position only → FusedMatMul against wte (tied lm_head, no transposed copy).
 * The small-batch step makes every projection genqueue.SmallBatchMatMul against [out, in] weights (copies of
 * GPT-2's [in, out] Conv1D weights under a ".t" name; wte already is [vocab, embd]).
 */
class Gpt2 implements DecoderArchitecture {
  readonly graphName = 'gpt2_decoder';
  readonly tensorPrefix: string;
  readonly spec: Omit<DecoderSpec, 'precision'>;
  readonly capabilities: DecoderCapabilities;
  private readonly D: number;
  private readonly inner: number;
  private readonly eps: AttrValue;
  private readonly gelu: 'FastGelu' | 'BiasGelu';

  constructor(
    checkpoint: HfCheckpoint,
    private readonly cfg: Gpt2Config,
  ) {
    this.tensorPrefix = tensorPrefix(checkpoint.tensors);
    const D = cfg.n_embd;
    const HS = D / cfg.n_head;
    this.D = D;
    this.inner = cfg.n_inner ?? 4 * D;
    this.eps = { float: cfg.layer_norm_epsilon };
    this.gelu = cfg.activation_function === 'gelu' ? 'BiasGelu' : 'FastGelu';
    const ids = generationTokenIds(checkpoint, { eos: cfg.eos_token_id, bos: cfg.bos_token_id });
    this.spec = {
      architecture: 'gpt2',
      numLayers: cfg.n_layer,
      numHeads: cfg.n_head,
      numKvHeads: cfg.n_head,
      headSize: HS,
      hiddenSize: D,
      vocabSize: cfg.vocab_size,
      contextLength: cfg.n_positions,
      ...ids,
      rope: null,
      slidingWindow: null,
    };
    // DecoderMaskedMultiHeadAttention's CUDA kernel exists for these head sizes (GPT-2 small to XL: 64).
    const masked = [32, 64, 128].includes(HS);
    this.capabilities = {
      attention: 'mha',
      positions: 'learned',
      norm: 'layernorm',
      activation: cfg.activation_function === 'gelu' ? 'gelu' : 'gelu_new',
      bias: { qkv: true, attentionOutput: true, mlp: true },
      tiedLmHead: cfg.tie_word_embeddings || !checkpoint.tensors.has('lm_head.weight'),
      sharedKvSearch: true,
      deviceLoop: true,
      maskedDecodeAttention: masked,
      smallBatchStep: masked && smallBatchFits(D, this.inner),
    };
  }

  private attentionScale(layer: number): number {
    const scale = this.cfg.scale_attn_weights ? 1 / Math.sqrt(this.spec.headSize) : 1;
    return this.cfg.scale_attn_by_inverse_layer_idx ? scale / (layer + 1) : scale;
  }

  private qkv(step: DecoderStep, i: number): PackedQkv {
    const D = this.D;
    return {
      weight: () => step.w.tensor(`h.${i}.attn.c_attn.weight`, [D, 3 * D]),
      bias: () => step.w.tensor(`h.${i}.attn.c_attn.bias`, [3 * D]),
      numHeads: this.cfg.n_head,
      scale: this.attentionScale(i),
    };
  }

  /** [gain, bias] of layer i's ln_1, or of ln_f for i = numLayers. */
  private norm(step: DecoderStep, i: number, which: 'ln_1' | 'ln_2' = 'ln_1'): [string, string] {
    const prefix = i === this.cfg.n_layer ? 'ln_f.' : `h.${i}.${which}.`;
    return [step.w.tensor(`${prefix}weight`, [this.D]), step.w.tensor(`${prefix}bias`, [this.D])];
  }

  private embeddings(step: DecoderStep): [string, string] {
    const { g, w, io } = step;
    const wte = w.tensor('wte.weight', [this.cfg.vocab_size, this.D]);
    const wpe = w.tensor('wpe.weight', [this.cfg.n_positions, this.D]);
    const [tok] = g.op('Gather', [wte, io.inputIds], ['tok_emb']);
    const [pos] = g.op('Gather', [wpe, io.positions()], ['pos_emb']);
    return [tok!, pos!];
  }

  embed(step: DecoderStep): LayerState {
    const [tok, pos] = this.embeddings(step);
    const [normed, , , residual] = step.g.msOp('SkipLayerNormalization', [tok, pos, ...this.norm(step, 0)], ['h0_ln1', '', '', 'h0_resid'], { epsilon: this.eps });
    return { normed: normed!, residual: residual! };
  }

  layer(step: DecoderStep, i: number, x: LayerState): LayerState {
    const { g, w } = step;
    const { D, inner, eps } = this;
    const h = `h.${i}.`;
    const attn = packedQkvAttention(step, `h${i}`, i, x.normed, this.qkv(step, i));
    const [proj] = g.op('MatMul', [attn, w.tensor(`${h}attn.c_proj.weight`, [D, D])], [`h${i}_attn_proj`]);
    const [ln2, , , resid2] = g.msOp(
      'SkipLayerNormalization',
      [proj!, x.residual, ...this.norm(step, i, 'ln_2'), w.tensor(`${h}attn.c_proj.bias`, [D])],
      [`h${i}_ln2`, '', '', `h${i}_resid2`],
      { epsilon: eps },
    );
    const [fc] = g.op('MatMul', [ln2!, w.tensor(`${h}mlp.c_fc.weight`, [D, inner])], [`h${i}_fc`]);
    const [act] = g.msOp(this.gelu, [fc!, w.tensor(`${h}mlp.c_fc.bias`, [inner])], [`h${i}_gelu`]);
    const [mlp] = g.op('MatMul', [act!, w.tensor(`${h}mlp.c_proj.weight`, [inner, D])], [`h${i}_mlp`]);
    const last = i === this.cfg.n_layer - 1;
    const [normed, , , residual] = g.msOp(
      'SkipLayerNormalization',
      [mlp!, resid2!, ...this.norm(step, i + 1), w.tensor(`${h}mlp.c_proj.bias`, [D])],
      [last ? 'final_ln' : `h${i + 1}_ln1`, '', '', last ? '' : `h${i + 1}_resid`],
      { epsilon: eps },
    );
    return { normed: normed!, residual: residual! };
  }

  lmHead(step: DecoderStep): string {
    const dims = [this.cfg.vocab_size, this.D];
    return this.capabilities.tiedLmHead ? 'wte.weight' : step.w.tensor('lm_head.weight', dims, 'lm_head.weight');
  }

  /**
   * Every projection is one SmallBatchMatMul with the layer normalization before it, and bias, FastGelu or the
   * residual after it, folded in: per layer 4 of them and the attention, no SkipLayerNormalization.
   */
  smallBatchStep(step: DecoderStep): string {
    const { g, w } = step;
    const { D, inner } = this;
    const layerNorm = (i: number, which?: 'ln_2') => {
      const [gamma, beta] = this.norm(step, i, which);
      return { kind: 'layernorm' as const, gamma, beta, epsilon: this.eps };
    };
    const [tok, pos] = this.embeddings(step);
    let x = g.op('Add', [tok, pos], ['embedded'])[0]!;
    for (let i = 0; i < this.cfg.n_layer; i++) {
      const h = `h.${i}.`;
      const qkv = this.qkv(step, i);
      const ln1 = layerNorm(i);
      const packed = smallBatchMatMul(g, { input: x, weight: w.transposed(`${h}attn.c_attn.weight`, D, 3 * D), norm: ln1 }, `h${i}_qkv`);
      const attn = maskedDecodeAttention(step, `h${i}`, i, packed, qkv);
      const x2 = smallBatchMatMul(g, { input: attn, weight: w.transposed(`${h}attn.c_proj.weight`, D, D), bias: w.tensor(`${h}attn.c_proj.bias`, [D]), residual: x }, `h${i}_resid2`);
      const ln2 = layerNorm(i, 'ln_2');
      const fcWeight = w.transposed(`${h}mlp.c_fc.weight`, D, inner);
      const fcBias = w.tensor(`${h}mlp.c_fc.bias`, [inner]);
      const act =
        this.gelu === 'FastGelu'
          ? smallBatchMatMul(g, { input: x2, weight: fcWeight, bias: fcBias, norm: ln2, activation: 'fast_gelu' }, `h${i}_gelu`)
          : g.msOp(this.gelu, [smallBatchMatMul(g, { input: x2, weight: fcWeight, norm: ln2 }, `h${i}_fc`), fcBias], [`h${i}_gelu`])[0]!;
      const projection = w.transposed(`${h}mlp.c_proj.weight`, inner, D);
      x = smallBatchMatMul(g, { input: act, weight: projection, bias: w.tensor(`${h}mlp.c_proj.bias`, [D]), residual: x2 }, `h${i}_resid3`);
    }
    return appendSmallBatchLogits(step, x, this.lmHead(step), layerNorm(this.cfg.n_layer));
  }
}

export const gpt2Architecture: ArchitectureDefinition = {
  modelTypes: ['gpt2'],
  open(checkpoint) {
    const cfg = parseConfig(Gpt2Config, checkpoint);
    if (cfg.n_embd % cfg.n_head !== 0) throw new Error(`${checkpoint.dir}/config.json: n_embd (${cfg.n_embd}) must be divisible by n_head (${cfg.n_head})`);
    return new Gpt2(checkpoint, cfg);
  },
};
