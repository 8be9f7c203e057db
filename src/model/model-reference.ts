import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { GenqueueConfig } from '../config/config-schema.js';
import { ModelName } from '../queue/job-schema.js';
import { downloadHubModel, type HubDownloadOptions, hubModelName, parseHubReference } from './checkpoint/hub-download.js';
import { ModelCache, type ResolvedModel } from './model-cache.js';
import type { FloatPrecision } from './onnx/tensor-types.js';

/**
 * `--model` takes a name from the config's `models`, a directory (HF checkpoint or built model) or a hub id
 * (`owner/name[@revision]`, downloaded into the Hugging Face cache); a config entry's path may be a hub id too.
 * Returns the built model (building and caching it on first use) and the name jobs use to ask for it
 * (jobModelName). Jobs name models, never paths: a reference whose name jobs cannot carry must be named in the config.
 */
/**
 * The name jobs use for a model reference, without resolving it: a config name is itself, a config entry's path
 * (directory or hub id) is that entry's name, a hub id is its repository's name, a directory its basename.
 * OpenAI Batch files name models by hub id (`"model": "Qwen/Qwen2.5-0.5B-Instruct"`): this maps them to the
 * queue a worker given the same reference serves. Throws when the result cannot name a model in jobs.
 */
export function jobModelName(reference: string, config: Pick<GenqueueConfig, 'models'>): string {
  if (config.models[reference]) return reference;
  const named = Object.entries(config.models).find(([, e]) => e.path === reference);
  const hub = parseHubReference(reference);
  const name = named ? named[0] : hub ? hubModelName(hub) : basename(resolve(reference));
  if (!ModelName.safeParse(name).success) {
    throw new Error(`"${reference}" gives no model name jobs can carry ("${name}": letters, digits, "_", "." or "-"); name it in the config's models`);
  }
  return name;
}

/** A configured precision for a device: "auto" is fp16 on a GPU and fp32 on the CPU provider. */
export function precisionFor(configured: 'auto' | FloatPrecision, device: string): FloatPrecision {
  if (configured !== 'auto') return configured;
  return device.trim().toLowerCase() === 'cpu' ? 'fp32' : 'fp16';
}

export async function resolveModelArg(
  arg: string,
  config: GenqueueConfig,
  precisionFlag?: FloatPrecision,
  hub?: HubDownloadOptions,
  /** The device the model is for (default worker.device): decides worker.precision "auto". */
  device?: string,
): Promise<ResolvedModel & { name: string }> {
  const entry = config.models[arg];
  let path = entry ? entry.path : arg;
  if (!existsSync(path)) {
    const ref = parseHubReference(path);
    if (!ref) {
      if (entry) throw new Error(`model "${arg}": its path ${path} does not exist and is not a hub id (owner/name[@revision])`);
      const names = Object.keys(config.models);
      throw new Error(`--model ${arg}: no such directory, not a hub id (owner/name[@revision]), and no model of that name in the config${names.length ? ` (known: ${names.join(', ')})` : ''}`);
    }
    path = await downloadHubModel(ref, hub);
  }
  const name = jobModelName(arg, config);
  const precision = precisionFlag ?? entry?.precision ?? precisionFor(config.worker.precision, device ?? config.worker.device);
  const cache = new ModelCache(config.cacheDir);
  const resolved = await cache.resolve(path, precision, name);
  return { ...resolved, name };
}
