import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { MODEL_FILES } from './contract.js';

export const MANIFEST_FILE = MODEL_FILES.manifest;

/** Bumped whenever the graphs a builder writes change, so cached models are rebuilt. */
export const BUILDER_VERSION = 16;

const RopeSpecSchema = z.object({
  type: z.enum(['default', 'linear', 'llama3', 'dynamic']),
  theta: z.number().positive(),
  dim: z.number().int().positive(),
  factor: z.number().positive().optional(),
  lowFreqFactor: z.number().positive().optional(),
  highFreqFactor: z.number().positive().optional(),
  originalMaxPositions: z.number().int().positive().optional(),
});

export const DecoderSpecSchema = z.object({
  architecture: z.string(),
  numLayers: z.number().int().positive(),
  numHeads: z.number().int().positive(),
  numKvHeads: z.number().int().positive(),
  headSize: z.number().int().positive(),
  hiddenSize: z.number().int().positive(),
  vocabSize: z.number().int().positive(),
  contextLength: z.number().int().positive(),
  eosTokenId: z.number().int().nonnegative(),
  eosTokenIds: z.array(z.number().int().nonnegative()).min(1),
  bosTokenId: z.number().int().nonnegative().optional(),
  padTokenId: z.number().int().nonnegative(),
  rope: RopeSpecSchema.nullable(),
  slidingWindow: z.number().int().positive().nullable(),
  precision: z.enum(['fp32', 'fp16']),
});

export const DecoderCapabilitiesSchema = z.object({
  attention: z.enum(['mha', 'gqa']),
  positions: z.enum(['learned', 'rotary']),
  norm: z.enum(['layernorm', 'rmsnorm']),
  activation: z.enum(['gelu', 'gelu_new', 'silu']),
  bias: z.object({ qkv: z.boolean(), attentionOutput: z.boolean(), mlp: z.boolean() }),
  tiedLmHead: z.boolean(),
  sharedKvSearch: z.boolean(),
  deviceLoop: z.boolean(),
  smallBatchStep: z.boolean(),
  maskedDecodeAttention: z.boolean(),
});

/** Describes a built model directory; the engine reads only this and the files it names. */
export const ModelManifest = z.object({
  builderVersion: z.number().int(),
  key: z.string(),
  name: z.string(),
  sourceDir: z.string(),
  spec: DecoderSpecSchema,
  capabilities: DecoderCapabilitiesSchema,
  files: z.object({
    greedy: z.string(),
    /** capabilities.sharedKvSearch: GreedySearch over one in-place KV buffer (CUDA). */
    greedyShared: z.string().optional(),
    beam: z.string(),
    sample: z.string(),
    /** capabilities.deviceLoop: the native addon's decode step (device-loop-graph.ts), for CUDA and for the CPU provider. */
    deviceLoop: z.string().optional(),
    deviceLoopCpu: z.string().optional(),
    /** fp16 builds with DecoderMaskedMultiHeadAttention: the CUDA step for batches of 1-2 (genqueue.SmallBatchMatMul). */
    deviceLoopSmallBatch: z.string().optional(),
    /** capabilities.deviceLoop: the slot engine's decode and prefill steps (slot-step-graph.ts). */
    slotDecode: z.string().optional(),
    slotPrefill: z.string().optional(),
    weights: z.string(),
    tokenizer: z.string(),
    /** tokenizer_config.json (chat template), when the checkpoint has one. */
    tokenizerConfig: z.string().optional(),
    chatTemplate: z.string().optional(),
  }),
  decoderNodes: z.number().int(),
  weightBytes: z.number().int(),
  buildSeconds: z.number(),
});
export type ModelManifest = z.infer<typeof ModelManifest>;

export function readManifest(dir: string): ModelManifest {
  const path = join(dir, MANIFEST_FILE);
  const parsed = ModelManifest.safeParse(JSON.parse(readFileSync(path, 'utf8')));
  if (!parsed.success) throw new Error(`${path}: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}
