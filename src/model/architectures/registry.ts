import type { HfCheckpoint } from '../checkpoint/hf-checkpoint.js';
import type { ArchitectureDefinition, DecoderArchitecture } from './architecture.js';
import { gpt2Architecture } from './gpt2.js';
import { llamaArchitecture } from './llama.js';
import { qwen2Architecture } from './qwen2.js';

const ARCHITECTURES: readonly ArchitectureDefinition[] = [gpt2Architecture, llamaArchitecture, qwen2Architecture];

/** A model_type no architecture file handles. */
export class UnsupportedModelError extends Error {
  override readonly name = 'UnsupportedModelError';
}

export function supportedModelTypes(): string[] {
  return ARCHITECTURES.flatMap((a) => a.modelTypes);
}

/** The architecture for a checkpoint's model_type, its config validated; new architectures register here. */
export function openArchitecture(checkpoint: HfCheckpoint): DecoderArchitecture {
  const definition = ARCHITECTURES.find((a) => a.modelTypes.includes(checkpoint.modelType));
  if (!definition) {
    throw new UnsupportedModelError(`model_type "${checkpoint.modelType}" is not supported (supported: ${supportedModelTypes().join(', ')})`);
  }
  return definition.open(checkpoint);
}
