import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { bfloat16Bits, encodeFloats } from '../onnx/tensor-types.js';
import { CHECKPOINT_FILES } from './hf-checkpoint.js';
import { mulberry32 } from './random-gpt2-checkpoint.js';
import type { SafetensorsEntry } from './safetensors.js';

/** The shape of a random Llama-family checkpoint (HF config.json fields, plus how the weights are stored). */
export interface RandomLlamaShape {
  readonly modelType: 'llama' | 'qwen2';
  readonly layers: number;
  readonly hidden: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly positions: number;
  readonly ropeTheta: number;
  /** HF rope_scaling (transformers 4 style), e.g. Llama 3.2's llama3 scaling; null for none. */
  readonly ropeScaling: Record<string, unknown> | null;
  readonly tied: boolean;
  readonly eosIds: readonly number[];
  readonly bosId: number | null;
  readonly dtype: 'BF16' | 'F16' | 'F32';
  readonly seed: number;
  /** Standard deviation of the weights. */
  readonly init: number;
}

/** Llama-3.2-1B's shapes (1.24B parameters, bf16, tied, GQA 32/8, llama3 rope). */
export const LLAMA_3_2_1B_SHAPE: RandomLlamaShape = {
  modelType: 'llama',
  layers: 16,
  hidden: 2048,
  heads: 32,
  kvHeads: 8,
  headDim: 64,
  intermediate: 8192,
  vocab: 128256,
  positions: 131072,
  ropeTheta: 500000,
  ropeScaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  tied: true,
  eosIds: [128001, 128008, 128009],
  bosId: 128000,
  dtype: 'BF16',
  seed: 0,
  init: 0.02,
};

/** Qwen2.5-0.5B's shapes (0.49B parameters, bf16, tied, GQA 14/2, q/k/v bias). */
export const QWEN2_5_0_5B_SHAPE: RandomLlamaShape = {
  modelType: 'qwen2',
  layers: 24,
  hidden: 896,
  heads: 14,
  kvHeads: 2,
  headDim: 64,
  intermediate: 4864,
  vocab: 151936,
  positions: 32768,
  ropeTheta: 1000000,
  ropeScaling: null,
  tied: true,
  eosIds: [151645, 151643],
  bosId: null,
  dtype: 'BF16',
  seed: 0,
  init: 0.02,
};

const BYTES = { BF16: 2, F16: 2, F32: 4 } as const;
const CHUNK = 1 << 22;

function encode(values: Float32Array, dtype: RandomLlamaShape['dtype']): Uint8Array {
  if (dtype === 'F32') return encodeFloats(values, 'fp32');
  if (dtype === 'F16') return encodeFloats(values, 'fp16');
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = bfloat16Bits(values[i]!);
  return new Uint8Array(out.buffer);
}

/**
 * Writes a Hugging Face-layout Llama/Qwen2 checkpoint with seeded random weights (uniform with std = init; norm
 * gains 1, biases 0), streamed tensor by tensor so that a 1B-parameter checkpoint never sits in memory, and the
 * tokenizer files of `tokenizerDir` (tokenizer.json, and tokenizer_config.json when present). For benchmarks
 * and the demo: models are made, not downloaded.
 */
export function writeRandomLlamaCheckpoint(dir: string, shape: RandomLlamaShape, tokenizerDir: string): void {
  mkdirSync(dir, { recursive: true });
  const D = shape.hidden;
  const q = shape.heads * shape.headDim;
  const kv = shape.kvHeads * shape.headDim;
  const tensors: { name: string; shape: number[]; fill: 'random' | 'ones' | 'zeros' }[] = [];
  const add = (name: string, dims: number[], fill: 'random' | 'ones' | 'zeros' = 'random'): void => void tensors.push({ name, shape: dims, fill });
  add('model.embed_tokens.weight', [shape.vocab, D]);
  for (let i = 0; i < shape.layers; i++) {
    const p = `model.layers.${i}.`;
    add(`${p}input_layernorm.weight`, [D], 'ones');
    add(`${p}self_attn.q_proj.weight`, [q, D]);
    add(`${p}self_attn.k_proj.weight`, [kv, D]);
    add(`${p}self_attn.v_proj.weight`, [kv, D]);
    if (shape.modelType === 'qwen2') {
      add(`${p}self_attn.q_proj.bias`, [q], 'zeros');
      add(`${p}self_attn.k_proj.bias`, [kv], 'zeros');
      add(`${p}self_attn.v_proj.bias`, [kv], 'zeros');
    }
    add(`${p}self_attn.o_proj.weight`, [D, q]);
    add(`${p}post_attention_layernorm.weight`, [D], 'ones');
    add(`${p}mlp.gate_proj.weight`, [shape.intermediate, D]);
    add(`${p}mlp.up_proj.weight`, [shape.intermediate, D]);
    add(`${p}mlp.down_proj.weight`, [D, shape.intermediate]);
  }
  add('model.norm.weight', [D], 'ones');
  if (!shape.tied) add('lm_head.weight', [shape.vocab, D]);

  const header: Record<string, SafetensorsEntry> = {};
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * BYTES[shape.dtype];
    header[t.name] = { dtype: shape.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const rand = mulberry32(shape.seed);
  const half = Math.sqrt(3) * shape.init;
  const fd = openSync(join(dir, CHECKPOINT_FILES.weights), 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    writeSync(fd, len);
    writeSync(fd, json);
    for (const t of tensors) {
      const count = t.shape.reduce((a, b) => a * b, 1);
      for (let first = 0; first < count; first += CHUNK) {
        const values = new Float32Array(Math.min(CHUNK, count - first));
        if (t.fill === 'ones') values.fill(1);
        else if (t.fill === 'random') for (let i = 0; i < values.length; i++) values[i] = (2 * rand() - 1) * half;
        writeSync(fd, encode(values, shape.dtype));
      }
    }
  } finally {
    closeSync(fd);
  }
  const config = {
    architectures: [shape.modelType === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: shape.modelType,
    hidden_size: D,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    head_dim: shape.headDim,
    max_position_embeddings: shape.positions,
    vocab_size: shape.vocab,
    rms_norm_eps: 1e-5,
    hidden_act: 'silu',
    rope_theta: shape.ropeTheta,
    rope_scaling: shape.ropeScaling,
    tie_word_embeddings: shape.tied,
    torch_dtype: { BF16: 'bfloat16', F16: 'float16', F32: 'float32' }[shape.dtype],
    bos_token_id: shape.bosId,
    eos_token_id: shape.eosIds.length === 1 ? shape.eosIds[0] : shape.eosIds,
  };
  writeFileSync(join(dir, CHECKPOINT_FILES.config), JSON.stringify(config, null, 2));
  // As transformers writes it: a model without a BOS id (Qwen2.5) has none in its generation config.
  const generation = { ...(shape.bosId === null ? {} : { bos_token_id: shape.bosId }), eos_token_id: shape.eosIds };
  writeFileSync(join(dir, CHECKPOINT_FILES.generationConfig), JSON.stringify(generation, null, 2));
  copyFileSync(join(tokenizerDir, CHECKPOINT_FILES.tokenizer), join(dir, CHECKPOINT_FILES.tokenizer));
  const tokenizerConfig = join(tokenizerDir, CHECKPOINT_FILES.tokenizerConfig);
  if (existsSync(tokenizerConfig)) copyFileSync(tokenizerConfig, join(dir, CHECKPOINT_FILES.tokenizerConfig));
}
