import type { ModelManifest } from '../model/manifest.js';
import type { GenerationBatchResult, GenerationRequest } from './generation-types.js';

export type ThreadRequest = { type: 'generate'; id: number; requests: GenerationRequest[] } | { type: 'close' };

export type ThreadResponse =
  | { type: 'ready'; manifest: ModelManifest; device: string }
  | { type: 'failed'; message: string }
  | { type: 'warning'; message: string }
  | { type: 'result'; id: number; result: GenerationBatchResult }
  | { type: 'error'; id: number; message: string };
