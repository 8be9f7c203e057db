import type { ModelManifest } from '../model/manifest.js';
import type { GenerationBatchResult, GenerationRequest } from './generation-types.js';

/** What callers above the engine see, whether the sessions live in this thread or in a worker thread. */
export interface TextGenerationEngine {
  readonly manifest: ModelManifest;
  /** e.g. "cuda:0" or "cpu". */
  readonly device: string;
  generate(requests: readonly GenerationRequest[]): Promise<GenerationBatchResult>;
  close(): Promise<void>;
}
