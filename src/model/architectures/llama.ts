import { z } from 'zod';
import type { HfCheckpoint } from '../checkpoint/hf-checkpoint.js';
import { decodeAttention, decodeAttentionFits, groupQueryAttention, rotaryAttention, type RotaryQkv } from '../components/attention.js';
import type { DecoderStep, LayerState } from '../components/decoder-step.js';
import { appendSmallBatchLogits } from '../components/heads.js';
import { ModelConfigError, generationTokenIds, parseConfig } from '../components/model-config.js';
import { parseRope } from '../components/rotary.js';
import { smallBatchFits, smallBatchMatMul } from '../components/small-batch.js';
import type { AttrValue } from '../onnx/graph-builder.js';
import type { ArchitectureDefinition, DecoderArchitecture, DecoderCapabilities, DecoderSpec } from './architecture.js';

const ids = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional();

/** The config.json fields of Llama-family decoders (llama, mistral, qwen2) this builder reads. */
export const LlamaFamilyConfig = z.object({
  model_type: z.enum(['llama', 'mistral', 'qwen2']),
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive().nullable().optional(),
  head_dim: z.number().int().positive().nullable().optional(),
  max_position_embeddings: z.number().int().positive(),
  vocab_size: z.number().int().positive(),
  rms_norm_eps: z.number().positive().default(1e-6),
  hidden_act: z.literal('silu', { message: 'only "silu" (SwiGLU) is supported' }).default('silu'),
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  sliding_window: z.number().int().positive().nullable().optional(),
  use_sliding_window: z.boolean().optional(),
  eos_token_id: ids,
  bos_token_id: z.number().int().nonnegative().nullable().optional(),
});
export type LlamaFamilyConfig = z.infer<typeof LlamaFamilyConfig>;

/**
 * Llama, Mistral and Qwen2 as one decoder step: Gather embeddings → per layer SimplifiedLayerNormalization
 * (RMSNorm; the next ones fold the residual add as SkipSimplifiedLayerNormalization) → one MatMul for q/k/v
 * (+ bias: Qwen2, or Llama with attention_bias) → rotary attention with grouped K/V heads → o_proj → RMSNorm →
 * one MatMul for gate/up → SiLU(gate) · up → down_proj → … → final RMSNorm → last position → FusedMatMul against
 * embed_tokens (tied) or lm_head. HF's Linear weights are [out, in]; the builder stores transposed copies.
 * The small-batch step reads them as they are: per layer one SmallBatchMatMul for q/k/v (RMSNorm and bias folded
 * in), GroupQueryAttention, one for o_proj (+ residual), one for gate/up (RMSNorm and SwiGLU folded in) and one for
 * down_proj (+ residual).
 */
export class LlamaFamily implements DecoderArchitecture {
  readonly graphName: string;
  readonly tensorPrefix = '';
  readonly spec: Omit<DecoderSpec, 'precision'>;
  readonly capabilities: DecoderCapabilities;
  private readonly eps: AttrValue;
  private readonly qkvBias: boolean;

  constructor(
    checkpoint: HfCheckpoint,
    private readonly cfg: LlamaFamilyConfig,
    options: { readonly qkvBias?: boolean } = {},
  ) {
    const where = `${checkpoint.dir}/config.json`;
    const N = cfg.num_attention_heads;
    const KVH = cfg.num_key_value_heads ?? N;
    if (N % KVH !== 0) throw new ModelConfigError(`${where}: num_attention_heads (${N}) must be a multiple of num_key_value_heads (${KVH})`);
    if (!cfg.head_dim && cfg.hidden_size % N !== 0) throw new ModelConfigError(`${where}: hidden_size (${cfg.hidden_size}) must be divisible by num_attention_heads (${N}) when head_dim is not given`);
    const HS = cfg.head_dim ?? cfg.hidden_size / N;
    if (HS % 2 !== 0) throw new ModelConfigError(`${where}: head_dim (${HS}) must be even for rotary embeddings`);
    const rope = parseRope(checkpoint.config, HS, cfg.max_position_embeddings, where);
    // Qwen2 declares a window it does not use unless use_sliding_window is set (and then only from max_window_layers).
    if (cfg.model_type === 'qwen2' && cfg.use_sliding_window) throw new ModelConfigError(`${where}: use_sliding_window: Qwen2's per-layer sliding window is not supported`);
    const window = cfg.model_type === 'mistral' ? (cfg.sliding_window ?? null) : null;
    this.graphName = `${cfg.model_type}_decoder`;
    this.eps = { float: cfg.rms_norm_eps };
    this.qkvBias = options.qkvBias === true || cfg.attention_bias;
    this.spec = {
      architecture: cfg.model_type,
      numLayers: cfg.num_hidden_layers,
      numHeads: N,
      numKvHeads: KVH,
      headSize: HS,
      hiddenSize: cfg.hidden_size,
      vocabSize: cfg.vocab_size,
      // Dynamic NTK scaling exists to run past the trained length: up to factor times it.
      contextLength: rope.type === 'dynamic' ? cfg.max_position_embeddings * rope.factor! : cfg.max_position_embeddings,
      ...generationTokenIds(checkpoint, { eos: cfg.eos_token_id, bos: cfg.bos_token_id }),
      rope,
      slidingWindow: window !== null && window < cfg.max_position_embeddings ? window : null,
    };
    this.capabilities = {
      attention: KVH < N ? 'gqa' : 'mha',
      positions: 'rotary',
      norm: 'rmsnorm',
      activation: 'silu',
      bias: { qkv: this.qkvBias, attentionOutput: cfg.attention_bias, mlp: cfg.mlp_bias },
      tiedLmHead: cfg.tie_word_embeddings || !checkpoint.tensors.has('lm_head.weight'),
      sharedKvSearch: false,
      // The device loop feeds prompts one token per step; dynamic scaling depends on the whole prompt's length.
      deviceLoop: rope.type !== 'dynamic',
      smallBatchStep: rope.type !== 'dynamic' && smallBatchFits(cfg.hidden_size, cfg.intermediate_size, N * HS),
      maskedDecodeAttention: false,
    };
  }

  private norm(step: DecoderStep, i: number, which: 'input_layernorm' | 'post_attention_layernorm' = 'input_layernorm'): string {
    const name = i === this.cfg.num_hidden_layers ? 'model.norm.weight' : `model.layers.${i}.${which}.weight`;
    return step.w.tensor(name, [this.cfg.hidden_size]);
  }

  embed(step: DecoderStep): LayerState {
    const { g, w, io } = step;
    const [x] = g.op('Gather', [w.tensor('model.embed_tokens.weight', [this.cfg.vocab_size, this.cfg.hidden_size]), io.inputIds], ['embedded']);
    const [normed] = g.op('SimplifiedLayerNormalization', [x!, this.norm(step, 0)], ['l0_norm'], { epsilon: this.eps, axis: -1 });
    return { normed: normed!, residual: x! };
  }

  /** Layer i's q/k/v projection: one stacked weight, [out, in] or transposed, and the concatenated bias. */
  private qkv(step: DecoderStep, i: number, layout: 'transposed' | 'out-in'): RotaryQkv {
    const { w } = step;
    const { numHeads: N, numKvHeads: KVH, headSize: HS } = this.spec;
    const p = `model.layers.${i}.self_attn.`;
    const parts = [
      { name: `${p}q_proj.weight`, rows: N * HS },
      { name: `${p}k_proj.weight`, rows: KVH * HS },
      { name: `${p}v_proj.weight`, rows: KVH * HS },
    ];
    const D = this.cfg.hidden_size;
    return {
      weight: () => (layout === 'transposed' ? w.stackedTransposed(`${p}qkv_proj.weight.t`, parts, D) : w.stacked(`${p}qkv_proj.weight`, parts, D)),
      bias: this.qkvBias
        ? () =>
            w.concatenated(`${p}qkv_proj.bias`, [
              { name: `${p}q_proj.bias`, size: N * HS },
              { name: `${p}k_proj.bias`, size: KVH * HS },
              { name: `${p}v_proj.bias`, size: KVH * HS },
            ])
        : undefined,
      numHeads: N,
      numKvHeads: KVH,
      headSize: HS,
    };
  }

  /** Layer i's gate and up projections stacked: gate rows, then up rows. */
  private gateUpParts(i: number): { name: string; rows: number }[] {
    const p = `model.layers.${i}.mlp.`;
    const I = this.cfg.intermediate_size;
    return [{ name: `${p}gate_proj.weight`, rows: I }, { name: `${p}up_proj.weight`, rows: I }];
  }

  /** Layer i's gate and up biases concatenated (mlp_bias). */
  private gateUpBias(step: DecoderStep, i: number): string {
    const p = `model.layers.${i}.mlp.`;
    const I = this.cfg.intermediate_size;
    return step.w.concatenated(`${p}gate_up_proj.bias`, [{ name: `${p}gate_proj.bias`, size: I }, { name: `${p}up_proj.bias`, size: I }]);
  }

  layer(step: DecoderStep, i: number, x: LayerState): LayerState {
    const { g, w } = step;
    const { hidden_size: D, intermediate_size: I } = this.cfg;
    const { numHeads: N, headSize: HS } = this.spec;
    const p = `model.layers.${i}.`;
    const attn = rotaryAttention(step, `l${i}`, i, x.normed, this.qkv(step, i, 'transposed'));
    const [out] = g.op('MatMul', [attn, w.transposed(`${p}self_attn.o_proj.weight`, D, N * HS)], [`l${i}_attn_out`]);
    const skipInputs = [out!, x.residual, this.norm(step, i, 'post_attention_layernorm')];
    if (this.cfg.attention_bias) skipInputs.push(w.tensor(`${p}self_attn.o_proj.bias`, [D]));
    const [normed2, , , resid2] = g.msOp('SkipSimplifiedLayerNormalization', skipInputs, [`l${i}_mlp_norm`, '', '', `l${i}_resid_attn`], { epsilon: this.eps });
    const [gateUpRaw] = g.op('MatMul', [normed2!, w.stackedTransposed(`${p}mlp.gate_up_proj.weight.t`, this.gateUpParts(i), D)], [`l${i}_gate_up`]);
    const gateUp = this.cfg.mlp_bias ? g.op('Add', [gateUpRaw!, this.gateUpBias(step, i)], [`l${i}_gate_up_biased`])[0]! : gateUpRaw!;
    const [gate, up] = g.op('Split', [gateUp, step.once('gate_up_split', () => g.int64s('gate_up_split', [I, I]))], [`l${i}_gate`, `l${i}_up`], { axis: -1 });
    const [sig] = g.op('Sigmoid', [gate!], [`l${i}_gate_sigmoid`]);
    const [silu] = g.op('Mul', [gate!, sig!], [`l${i}_silu`]);
    const [hidden] = g.op('Mul', [silu!, up!], [`l${i}_swiglu`]);
    const [down] = g.op('MatMul', [hidden!, w.transposed(`${p}mlp.down_proj.weight`, D, I)], [`l${i}_mlp_out`]);
    const last = i === this.cfg.num_hidden_layers - 1;
    const nextInputs = [down!, resid2!, this.norm(step, i + 1)];
    if (this.cfg.mlp_bias) nextInputs.push(w.tensor(`${p}mlp.down_proj.bias`, [D]));
    const [normed, , , residual] = g.msOp('SkipSimplifiedLayerNormalization', nextInputs, [last ? 'final_norm' : `l${i + 1}_norm`, '', '', last ? '' : `l${i + 1}_resid`], {
      epsilon: this.eps,
    });
    return { normed: normed!, residual: residual! };
  }

  lmHead(step: DecoderStep): string {
    const dims = [this.cfg.vocab_size, this.cfg.hidden_size];
    // Tied: the embedding initializer the step already holds.
    return this.capabilities.tiedLmHead ? 'model.embed_tokens.weight' : step.w.tensor('lm_head.weight', dims);
  }

  smallBatchStep(step: DecoderStep): string {
    const { g, w, io } = step;
    const { hidden_size: D, intermediate_size: I } = this.cfg;
    const { numHeads: N, headSize: HS } = this.spec;
    const rms = (i: number, which?: 'post_attention_layernorm') => ({ kind: 'rmsnorm' as const, gamma: this.norm(step, i, which), epsilon: this.eps });
    let [x] = g.op('Gather', [w.tensor('model.embed_tokens.weight', [this.cfg.vocab_size, D]), io.inputIds], ['embedded']);
    for (let i = 0; i < this.cfg.num_hidden_layers; i++) {
      const p = `model.layers.${i}.`;
      const qkv = this.qkv(step, i, 'out-in');
      const packed = smallBatchMatMul(g, { input: x!, weight: qkv.weight(), bias: qkv.bias?.(), norm: rms(i) }, `l${i}_qkv`);
      const attn = (decodeAttentionFits(N, this.spec.numKvHeads, HS) ? decodeAttention : groupQueryAttention)(step, `l${i}`, i, packed, qkv);
      const oBias = this.cfg.attention_bias ? w.tensor(`${p}self_attn.o_proj.bias`, [D]) : undefined;
      const x2 = smallBatchMatMul(g, { input: attn, weight: w.tensor(`${p}self_attn.o_proj.weight`, [D, N * HS]), bias: oBias, residual: x }, `l${i}_resid_attn`);
      const gateUp = w.stacked(`${p}mlp.gate_up_proj.weight`, this.gateUpParts(i), D);
      const gateUpBias = this.cfg.mlp_bias ? this.gateUpBias(step, i) : undefined;
      const hidden = smallBatchMatMul(g, { input: x2, weight: gateUp, bias: gateUpBias, norm: rms(i, 'post_attention_layernorm'), activation: 'swiglu' }, `l${i}_swiglu`);
      const downBias = this.cfg.mlp_bias ? w.tensor(`${p}mlp.down_proj.bias`, [D]) : undefined;
      x = smallBatchMatMul(g, { input: hidden, weight: w.tensor(`${p}mlp.down_proj.weight`, [D, I]), bias: downBias, residual: x2 }, `l${i}_resid`);
    }
    return appendSmallBatchLogits(step, x!, this.lmHead(step), rms(this.cfg.num_hidden_layers));
  }
}

/** Llama (1-3.x) and Mistral (Llama with a sliding window, honoured when shorter than the context). */
export const llamaArchitecture: ArchitectureDefinition = {
  modelTypes: ['llama', 'mistral'],
  open(checkpoint) {
    return new LlamaFamily(checkpoint, parseConfig(LlamaFamilyConfig, checkpoint));
  },
};
