import type { z } from 'zod';
import type { HfCheckpoint } from '../checkpoint/hf-checkpoint.js';

/** config.json refused: names the file, the field and the reason. */
export class ModelConfigError extends Error {
  override readonly name = 'ModelConfigError';
}

/** Validates config.json against an architecture's schema; the first problem names its field. */
export function parseConfig<S extends z.ZodType>(schema: S, checkpoint: HfCheckpoint): z.infer<S> {
  const parsed = schema.safeParse(checkpoint.config);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue?.path.join('.') || 'config';
  const missing = issue?.code === 'invalid_type' && checkpoint.config[String(issue.path[0])] === undefined;
  throw new ModelConfigError(`${checkpoint.dir}/config.json: ${field}: ${missing ? 'required field is missing' : (issue?.message ?? 'invalid')}`);
}

type TokenIds = number | readonly number[] | null | undefined;

const asList = (ids: TokenIds): number[] => (ids === null || ids === undefined ? [] : typeof ids === 'number' ? [ids] : [...ids]);

/**
 * The special ids generation uses: every EOS id (generation_config.json first, as HF's generate reads it, then
 * config.json), BOS, and the pad id (the first EOS id when none is given: padding is masked anyway).
 */
export function generationTokenIds(
  checkpoint: HfCheckpoint,
  config: { eos?: TokenIds; bos?: number | null | undefined },
): { eosTokenId: number; eosTokenIds: number[]; bosTokenId?: number; padTokenId: number } {
  const gen = checkpoint.generation;
  const fromGeneration = asList(gen.eos_token_id);
  const eosTokenIds = [...new Set(fromGeneration.length ? fromGeneration : asList(config.eos))];
  const eosTokenId = eosTokenIds[0];
  if (eosTokenId === undefined) throw new ModelConfigError(`${checkpoint.dir}: eos_token_id: required field is missing (in generation_config.json or config.json)`);
  const bos = gen.bos_token_id ?? config.bos ?? undefined;
  return { eosTokenId, eosTokenIds, ...(bos === undefined || bos === null ? {} : { bosTokenId: bos }), padTokenId: gen.pad_token_id ?? eosTokenId };
}
