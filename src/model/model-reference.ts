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
 * Returns the built model (building and caching it on first use) and the name jobs use to ask for it: the config
 * name, else the directory's basename or the hub repository's name. Jobs name models, never paths: the name must
 * be a valid job model name, or the model has to be named in the config.
 */
export async function resolveModelArg(
  arg: string,
  config: GenqueueConfig,
  precisionFlag?: FloatPrecision,
  hub?: HubDownloadOptions,
): Promise<ResolvedModel & { name: string }> {
  const entry = config.models[arg];
  let path = entry ? entry.path : arg;
  let name = entry ? arg : basename(resolve(path));
  if (!existsSync(path)) {
    const ref = parseHubReference(path);
    if (!ref) {
      if (entry) throw new Error(`model "${arg}": its path ${path} does not exist and is not a hub id (owner/name[@revision])`);
      const names = Object.keys(config.models);
      throw new Error(`--model ${arg}: no such directory, not a hub id (owner/name[@revision]), and no model of that name in the config${names.length ? ` (known: ${names.join(', ')})` : ''}`);
    }
    path = await downloadHubModel(ref, hub);
    if (!entry) name = hubModelName(ref);
  }
  if (!ModelName.safeParse(name).success) {
    throw new Error(`model ${arg}: "${name}" cannot name a model in jobs (letters, digits, "_", "." or "-"); give it a name in the config's models`);
  }
  const precision = precisionFlag ?? entry?.precision ?? config.worker.precision;
  const cache = new ModelCache(config.cacheDir);
  const resolved = await cache.resolve(path, precision, name);
  return { ...resolved, name };
}
