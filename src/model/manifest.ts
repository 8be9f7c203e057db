import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';

export const MANIFEST_FILE = 'genqueue-model.json';

/** Bumped whenever the graphs a builder writes change, so cached models are rebuilt. */
export const BUILDER_VERSION = 14;

export const DecoderSpecSchema = z.object({
  architecture: z.string(),
  numLayers: z.number().int().positive(),
  numHeads: z.number().int().positive(),
  headSize: z.number().int().positive(),
  hiddenSize: z.number().int().positive(),
  vocabSize: z.number().int().positive(),
  contextLength: z.number().int().positive(),
  eosTokenId: z.number().int().nonnegative(),
  padTokenId: z.number().int().nonnegative(),
  precision: z.enum(['fp32', 'fp16']),
});

/** Describes a built model directory; the engine reads only this and the files it names. */
export const ModelManifest = z.object({
  builderVersion: z.number().int(),
  key: z.string(),
  name: z.string(),
  sourceDir: z.string(),
  spec: DecoderSpecSchema,
  files: z.object({
    greedy: z.string(),
    greedyShared: z.string(),
    beam: z.string(),
    sample: z.string(),
    /** The native addon's decode step (device-loop-graph.ts), for CUDA and for the CPU provider. */
    deviceLoop: z.string(),
    deviceLoopCpu: z.string(),
    /** fp16 builds with DecoderMaskedMultiHeadAttention: the CUDA step for batches of 1-2 (genqueue.SmallBatchMatMul). */
    deviceLoopSmallBatch: z.string().optional(),
    /** The slot engine's decode and prefill steps (slot-step-graph.ts); absent in builds older than version 14. */
    slotDecode: z.string().optional(),
    slotPrefill: z.string().optional(),
    weights: z.string(),
    tokenizer: z.string(),
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
