import type { Logger } from 'pino';
import { createLogger } from '../cli/logger.js';
import { formatDevice } from '../engine/execution-provider.js';
import { resolveModelArg } from '../model/model-reference.js';
import { type StartedWorker, type StartOptions, startWorker as startWorkerWith } from '../worker/worker-process.js';
import { type ConfigOptions, configFrom } from './load-options.js';

export interface StartWorkerOptions extends ConfigOptions, Omit<StartOptions, 'model'> {
  /** A config model name, a checkpoint or built model directory, or a hub id (default: the config's defaultModel). */
  readonly model?: string;
  /** pino logger for the worker's logs (default: one at the config's logLevel, on stderr). */
  readonly logger?: Logger;
}

export interface LibraryWorker extends StartedWorker {
  /** The name jobs use to reach this worker's model queue (`"model"` field); jobs without a model reach it too. */
  readonly modelName: string;
}

/**
 * Starts a worker in this process: resolves (and builds) the model, opens its engine in a worker thread and
 * serves the shared queue and the model's queue until `close()`, which finishes active jobs first.
 */
export async function startWorker(options: StartWorkerOptions = {}): Promise<LibraryWorker> {
  const config = configFrom(options);
  const modelArg = options.model ?? config.defaultModel;
  if (!modelArg) throw new Error('startWorker: no model (pass model, or set defaultModel in the config or GENQUEUE_MODEL)');
  const logger = options.logger ?? createLogger(config.logLevel);
  const model = await resolveModelArg(modelArg, config, options.precision, undefined, typeof options.device === 'string' ? options.device : options.device && formatDevice(options.device));
  if (model.built) logger.info({ dir: model.dir, seconds: model.manifest.buildSeconds }, 'built model');
  const { config: _c, cacheDir: _d, logger: _l, model: _m, ...startOptions } = options;
  const started = await startWorkerWith(config, model, startOptions, logger);
  return Object.assign(started, { modelName: model.name });
}
