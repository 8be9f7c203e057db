import { parseConfig } from '../components/model-config.js';
import type { ArchitectureDefinition } from './architecture.js';
import { LlamaFamily, LlamaFamilyConfig } from './llama.js';

/** Qwen2 / Qwen2.5: Llama's decoder with a bias on the q/k/v projections (and usually tied embeddings). */
export const qwen2Architecture: ArchitectureDefinition = {
  modelTypes: ['qwen2'],
  open(checkpoint) {
    return new LlamaFamily(checkpoint, parseConfig(LlamaFamilyConfig, checkpoint), { qkvBias: true });
  },
};
