/**
 * genqueue's library API: `import { JobProducer, ResultCollector, startWorker, openEngine } from 'genqueue'`.
 * Everything exported here is public and typed; other modules are internal and may change.
 */

// Producing jobs and collecting results (Redis via BullMQ).
export { JobProducer, InvalidJobsError } from './queue/job-producer.js';
export type { EnqueuedJob, EnqueueFileOptions, EnqueueReport, JobProducerOptions, RefusedLine } from './queue/job-producer.js';
export { ResultCollector, readJobRefs } from './queue/result-collector.js';
export type { CollectedResult, CollectOptions, JobRef } from './queue/result-collector.js';
export { jobFromFields, parseJob, parseJobLine, DEFAULT_MAX_NEW_TOKENS, GENQUEUE_LINES } from './queue/job-schema.js';
export type { JobData, JobInput, ParsedJob, LineFormat, ParsedLine } from './queue/job-schema.js';
export type { JobResult, Timings } from './queue/result-schema.js';
export { queueNameFor, DEFAULT_QUEUE, DEFAULT_PREFIX, keyPrefix } from './queue/queue-names.js';
export {
  parseOpenAiRequest,
  openAiLines,
  readOpenAiBatch,
  readOpenAiRefs,
  detectFileFormat,
  openAiOutputLine,
  openAiRefusedLine,
  jobIdForCustomId,
  writtenCustomIds,
  repairLastLine,
} from './queue/openai-batch.js';
export type { ChatMessage, OpenAiJobRef, OpenAiJobFields, OpenAiRequestRef, OpenAiMappingOptions, OpenAiOutput, ParsedOpenAiLine } from './queue/openai-batch.js';
export {
  createRedisConnection,
  closeRedis,
  redactUrl,
  DEFAULT_REDIS_URL,
  RedisUrlError,
  RedisTlsFileError,
  RedisUnavailableError,
} from './queue/redis-connection.js';
export type { RedisConnection, RedisConnectionOptions, RedisTlsFiles } from './queue/redis-connection.js';

// Serving jobs, or generating without a queue.
export { startWorker } from './api/start-worker.js';
export type { LibraryWorker, StartWorkerOptions } from './api/start-worker.js';
export { openEngine } from './api/open-engine.js';
export type { OpenedEngine, OpenEngineOptions, TextGeneration } from './api/open-engine.js';
export type { ConfigOptions } from './api/load-options.js';
export type { TextGenerationEngine } from './engine/text-generation-engine.js';
export type { FinishReason, GenerationBatchResult, GenerationRequest, GenerationResult, SearchParams } from './engine/generation-types.js';
export { parseDevice, formatDevice, CudaProviderUnavailableError, CudaDeviceUnavailableError } from './engine/execution-provider.js';
export { installCudaProvider, CudaProviderInstallError, CUDA_PROVIDER_PACKAGE } from './engine/cuda-provider-install.js';
export { checkCudaEnvironment } from './engine/cuda-environment.js';
export type { EnvironmentCheck } from './engine/cuda-environment.js';
export type { DeviceSpec } from './engine/execution-provider.js';
export { TextTokenizer } from './tokenizer/text-tokenizer.js';

// Models by hub id.
export { downloadHubModel, parseHubReference, hfHubCacheDir, HubModelUnavailableError } from './model/checkpoint/hub-download.js';
export type { HubDownloadOptions, HubReference } from './model/checkpoint/hub-download.js';

// Configuration.
export { loadConfig } from './config/load-config.js';
export type { GenqueueConfig } from './config/config-schema.js';
