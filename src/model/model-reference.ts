import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { GenqueueConfig } from '../config/config-schema.js';
import { ModelCache, type ResolvedModel } from './model-cache.js';
import type { FloatPrecision } from './onnx/tensor-types.js';

/**
 * `--model` takes a directory (HF checkpoint or built model) or a name from the config's `models`.
 * Returns the built model (building and caching it on first use) and the name jobs use to ask for it.
 */
export async function resolveModelArg(
  arg: string,
  config: GenqueueConfig,
  precisionFlag?: FloatPrecision,
): Promise<ResolvedModel & { name: string }> {
  const entry = config.models[arg];
  const path = entry ? entry.path : arg;
  if (!entry && !existsSync(path)) {
    const names = Object.keys(config.models);
    throw new Error(`--model ${arg}: no such directory, and no model of that name in the config${names.length ? ` (known: ${names.join(', ')})` : ''}`);
  }
  const name = entry ? arg : basename(resolve(path));
  const precision = precisionFlag ?? entry?.precision ?? config.worker.precision;
  const cache = new ModelCache(config.cacheDir);
  const resolved = await cache.resolve(path, precision, name);
  return { ...resolved, name };
}
