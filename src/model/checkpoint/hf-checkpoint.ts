import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { type FloatTensor, SafetensorsFile } from './safetensors.js';

/** The files of a Hugging Face checkpoint directory that the builders read. */
export const CHECKPOINT_FILES = {
  config: 'config.json',
  generationConfig: 'generation_config.json',
  tokenizer: 'tokenizer.json',
  tokenizerConfig: 'tokenizer_config.json',
  chatTemplate: 'chat_template.jinja',
  weights: 'model.safetensors',
  weightsIndex: 'model.safetensors.index.json',
} as const;

const ShardIndex = z.object({ weight_map: z.record(z.string(), z.string()) });

/** Generation defaults a checkpoint may carry (generation_config.json); everything optional. */
export const GenerationDefaults = z
  .object({
    eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).optional(),
    bos_token_id: z.number().int().optional(),
    pad_token_id: z.number().int().nullable().optional(),
    max_new_tokens: z.number().int().positive().optional(),
  })
  .passthrough();
export type GenerationDefaults = z.infer<typeof GenerationDefaults>;

/** Tensor access over one file or a sharded set; names are looked up as written in the checkpoint. */
export class CheckpointTensors {
  private readonly fileOf = new Map<string, SafetensorsFile>();

  constructor(files: SafetensorsFile[]) {
    for (const f of files) for (const n of f.names()) this.fileOf.set(n, f);
  }

  names(): string[] {
    return [...this.fileOf.keys()];
  }

  has(name: string): boolean {
    return this.fileOf.has(name);
  }

  read(name: string): FloatTensor {
    return this.file(name).readFloat(name);
  }

  shape(name: string): number[] {
    return this.file(name).entry(name).shape;
  }

  /** The tensor as float32 pieces of at most maxElements values (SafetensorsFile.forEachFloatChunk). */
  forEachChunk(name: string, maxElements: number, visit: (values: Float32Array) => void): void {
    this.file(name).forEachFloatChunk(name, maxElements, visit);
  }

  private file(name: string): SafetensorsFile {
    const f = this.fileOf.get(name);
    if (!f) throw new Error(`checkpoint has no tensor ${name}`);
    return f;
  }
}

export interface HfCheckpoint {
  readonly dir: string;
  /** config.json as parsed JSON; each architecture validates its own fields. */
  readonly config: Record<string, unknown>;
  readonly modelType: string;
  readonly generation: GenerationDefaults;
  readonly tokenizerPath: string;
  /** Files whose bytes define the checkpoint (for cache keys). */
  readonly inputFiles: string[];
  readonly tensors: CheckpointTensors;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
}

export function isHfCheckpointDir(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINT_FILES.config));
}

/** Opens a checkpoint directory: config.json, generation_config.json, tokenizer.json and safetensors (single or sharded). */
export function openHfCheckpoint(dir: string): HfCheckpoint {
  const configPath = join(dir, CHECKPOINT_FILES.config);
  if (!existsSync(configPath)) throw new Error(`${dir}: no config.json; not a Hugging Face checkpoint directory`);
  const config = z.record(z.string(), z.unknown()).parse(readJson(configPath));
  const modelType = typeof config.model_type === 'string' ? config.model_type : '';
  if (!modelType) throw new Error(`${configPath}: model_type is missing`);

  const genPath = join(dir, CHECKPOINT_FILES.generationConfig);
  const generation = existsSync(genPath) ? GenerationDefaults.parse(readJson(genPath)) : {};

  const tokenizerPath = join(dir, CHECKPOINT_FILES.tokenizer);
  if (!existsSync(tokenizerPath)) throw new Error(`${dir}: no tokenizer.json (the fast-tokenizer file is required)`);

  const single = join(dir, CHECKPOINT_FILES.weights);
  const indexPath = join(dir, CHECKPOINT_FILES.weightsIndex);
  let weightFiles: string[];
  if (existsSync(single)) weightFiles = [single];
  else if (existsSync(indexPath)) {
    const index = ShardIndex.parse(readJson(indexPath));
    weightFiles = [...new Set(Object.values(index.weight_map))].sort().map((f) => join(dir, f));
  } else throw new Error(`${dir}: no model.safetensors nor model.safetensors.index.json`);

  const tokenizerFiles = [CHECKPOINT_FILES.tokenizerConfig, CHECKPOINT_FILES.chatTemplate].map((f) => join(dir, f)).filter((f) => existsSync(f));
  const inputFiles = [configPath, ...(existsSync(genPath) ? [genPath] : []), tokenizerPath, ...tokenizerFiles, ...weightFiles];
  return {
    dir,
    config,
    modelType,
    generation,
    tokenizerPath,
    inputFiles,
    tensors: new CheckpointTensors(weightFiles.map((f) => SafetensorsFile.open(f))),
  };
}
