import type { Logger } from 'pino';
import type { GenqueueConfig } from '../config/config-schema.js';
import { formatDevice, parseDevice } from '../engine/execution-provider.js';
import { warmupRequest } from '../engine/generation-types.js';
import { runsDeviceLoop } from '../engine/generator.js';
import type { TextGenerationEngine } from '../engine/text-generation-engine.js';
import { ThreadedGenerator } from '../engine/threaded-generator.js';
import { ThreadedSlotEngine } from '../engine/threaded-slot-engine.js';
import type { ResolvedModel } from '../model/model-cache.js';
import { resolveModelArg } from '../model/model-reference.js';
import type { FloatPrecision } from '../model/onnx/tensor-types.js';
import { type RedisConnection, assertRedisReachable, closeRedis, createRedisConnection } from '../queue/redis-connection.js';
import { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { type EngineSetting, chooseEngine, slotEngineOptions } from './engine-choice.js';
import { GenerationWorker, type ShutdownReport } from './generation-worker.js';
import { LazyEngine } from './lazy-engine.js';
import { MetricsServer, redisCheck } from './metrics-server.js';

export interface WorkerProcessOptions {
  readonly model?: string;
  readonly device?: string;
  readonly maxBatch?: number;
  readonly maxWaitMs?: number;
  readonly precision?: FloatPrecision;
  readonly workerId?: string;
  readonly deviceLoopMaxBatch?: number;
  readonly warmupLengths?: readonly number[];
  readonly metricsPort?: number;
  /** auto, slots (continuous batching) or batches (default: config worker.engine). */
  readonly engine?: EngineSetting;
  /** Rows of the slot engine's running batch (default: config worker.slots, then 256 on CUDA, 8 on the CPU). */
  readonly slots?: number;
}

export interface StartOptions extends WorkerProcessOptions {
  /** Overrides the config's Redis URL (the demo's private server); the config's redisTls applies to a rediss:// one. */
  readonly redisUrl?: string;
  /** BullMQ key prefix (the demo keeps its jobs apart). */
  readonly prefix?: string;
  readonly concurrency?: number;
  readonly fetchers?: number;
}

export interface StartedWorker {
  /** The search ops: every job on batches; beam jobs beside the slot engine (then opened on the first one). */
  readonly engine: TextGenerationEngine;
  /** Continuous batching, when the worker runs on the slot engine. */
  readonly slotEngine: ThreadedSlotEngine | undefined;
  readonly worker: GenerationWorker;
  /** The worker's Redis connection, also usable by a producer in the same process. */
  readonly connection: RedisConnection;
  /** Serves /metrics and /healthz when a metrics port was given. */
  readonly metrics: MetricsServer | undefined;
  /**
   * Finishes the active batch and gives BullMQ config.worker.shutdownTimeoutMs to record it, then releases the
   * metrics server, the engine and the connections (cut, if the deadline passed).
   */
  close(): Promise<ShutdownReport>;
}

/** Opens the engine for a built model in its worker thread and starts serving its queues. */
export async function startWorker(
  config: GenqueueConfig,
  model: ResolvedModel & { name: string },
  o: StartOptions,
  logger: Logger,
): Promise<StartedWorker> {
  const device = parseDevice(o.device ?? config.worker.device);
  const deviceLoopMaxBatch = o.deviceLoopMaxBatch ?? config.worker.deviceLoopMaxBatch;
  const openSearchOps = (): Promise<ThreadedGenerator> => ThreadedGenerator.open(model.dir, { device, deviceLoopMaxBatch, onWarning: (m) => logger.warn(m) });
  const maxBatch = o.maxBatch ?? config.worker.maxBatch;
  const warmupLengths = o.warmupLengths ?? config.worker.warmupLengths;
  const choice = chooseEngine(o.engine ?? config.worker.engine, model.manifest, device);
  // On CUDA continuous batching is what a worker is expected to run; on the CPU the search ops are a fine second.
  if (choice.kind === 'batches' && choice.reason) {
    if (device.kind === 'cpu') logger.info(choice.reason);
    else logger.warn(choice.reason);
  }
  let engine: TextGenerationEngine;
  let slotEngine: ThreadedSlotEngine | undefined;
  if (choice.kind === 'slots') {
    slotEngine = await ThreadedSlotEngine.open(model.dir, slotEngineOptions(config.worker, model.manifest, device, o.slots, (m) => logger.warn(m)));
    engine = new LazyEngine(openSearchOps, model.manifest, formatDevice(device));
    await warmUpSlots(slotEngine, model.manifest.spec.eosTokenId, warmupLengths, logger).catch(async (e: unknown) => {
      await slotEngine!.close(); // its thread would otherwise keep the process alive
      throw e;
    });
  } else {
    const generator = await openSearchOps();
    engine = generator;
    const warmupBatches = [maxBatch, ...(runsDeviceLoop(generator) && deviceLoopMaxBatch < maxBatch ? [deviceLoopMaxBatch] : [])];
    await warmUp(generator, warmupBatches, warmupLengths, logger).catch(async (e: unknown) => {
      await generator.close(); // its thread would otherwise keep the process alive
      throw e;
    });
  }
  const closeEngines = async (): Promise<void> => {
    await Promise.allSettled([engine.close(), slotEngine?.close()]);
  };
  const connection = createRedisConnection(o.redisUrl ?? config.redisUrl, { logger, tls: config.redisTls });
  const worker = new GenerationWorker({
    connection,
    engine,
    slotEngine,
    streamEveryTokens: config.worker.streamEveryTokens,
    tokenizer: TextTokenizer.fromModelDir(model.dir, model.manifest.files),
    modelName: model.name,
    maxBatch,
    maxWaitMs: o.maxWaitMs ?? config.worker.maxWaitMs,
    workerId: o.workerId ?? config.worker.id,
    maxPromptChars: config.limits.maxPromptChars,
    concurrency: o.concurrency,
    fetchers: o.fetchers,
    prefix: o.prefix,
    logger,
    lockDurationMs: config.worker.lockDurationMs,
    stalledIntervalMs: config.worker.stalledIntervalMs,
  });
  const metricsPort = o.metricsPort ?? config.worker.metricsPort;
  let closing = false;
  // Healthy: Redis answers and the engine is open (it closes only when the worker shuts down).
  const health = async () => ({ redis: await redisCheck(connection), engine: closing ? 'closing' : 'ok' });
  let metrics: MetricsServer | undefined;
  try {
    if (metricsPort !== undefined) {
      metrics = await MetricsServer.start({ port: metricsPort, host: config.worker.metricsHost, registry: worker.metrics.registry, health });
    }
  } catch (e) {
    await closeEngines();
    connection.disconnect();
    throw new Error(`metrics server on ${config.worker.metricsHost}:${metricsPort}: ${(e as Error).message}`);
  }
  worker.start();
  return {
    engine,
    slotEngine,
    worker,
    connection,
    metrics,
    close: async () => {
      closing = true;
      const report = await worker.close(config.worker.shutdownTimeoutMs);
      await metrics?.close();
      await closeEngines();
      await closeRedis(connection);
      return report;
    },
  };
}

/**
 * Before the worker takes jobs: every slot through three chunks (the first runs plainly, the second captures the
 * CUDA graph that every later chunk replays), then per warm-up length L every slot with a prompt of L / 2 tokens
 * and L / 2 new ones, so that prefill runs of that size have been met.
 */
async function warmUpSlots(engine: ThreadedSlotEngine, eosTokenId: number, lengths: readonly number[], logger: Logger): Promise<void> {
  const { slots, chunkSteps, capacity } = engine.limits;
  const run = async (promptTokens: number, newTokens: number): Promise<void> => {
    const started = performance.now();
    const request = { promptIds: new Array<number>(promptTokens).fill(eosTokenId), maxNewTokens: newTokens, minNewTokens: newTokens };
    await Promise.all(Array.from({ length: slots }, () => engine.generate(request)));
    logger.info({ promptTokens, newTokens, slots, seconds: (performance.now() - started) / 1000 }, 'warmed up');
  };
  await run(1, Math.min(2 * chunkSteps + 1, capacity - 1));
  for (const length of lengths) {
    const total = Math.min(length, capacity);
    if (total < 2) continue;
    const prompt = Math.floor(total / 2);
    await run(prompt, total - prompt);
  }
}

/**
 * One batch per length and batch size (no early stop, so every position runs), before the worker takes jobs:
 * the full batch, and, when the device loop takes smaller greedy batches, its largest one too, so both paths
 * have met each length.
 */
async function warmUp(engine: ThreadedGenerator, batches: readonly number[], lengths: readonly number[], logger: Logger): Promise<void> {
  const { eosTokenId, contextLength } = engine.manifest.spec;
  for (const length of lengths) {
    const total = Math.min(length, contextLength);
    for (const batch of batches) {
      const started = performance.now();
      await engine.generate(Array.from({ length: batch }, () => warmupRequest(eosTokenId, total - 1)));
      logger.info({ length: total, batch, seconds: (performance.now() - started) / 1000 }, 'warmed up');
    }
  }
}

/**
 * A worker process's whole life: check Redis, resolve (and build) the model, serve until SIGINT/SIGTERM, then
 * finish the active batch and release everything. The caller exits with shutdownExitCode(report): after a forced
 * shutdown BullMQ's timers would keep the process alive. Used by `genqueue worker` and workers/worker.ts.
 */
export async function runWorkerProcess(config: GenqueueConfig, o: WorkerProcessOptions, logger: Logger): Promise<ShutdownReport> {
  const modelArg = o.model ?? config.defaultModel;
  if (!modelArg) throw new Error('no model: pass --model or set defaultModel in the config (or GENQUEUE_MODEL)');
  // A wrong URL or password is one clear error now, not a warning repeated for ever once the model is loaded.
  await assertRedisReachable(config.redisUrl, { logger, tls: config.redisTls, giveUpAfterMs: config.redisConnectTimeoutMs });
  const model = await resolveModelArg(modelArg, config, o.precision, undefined, o.device);
  if (model.built) logger.info({ dir: model.dir, seconds: model.manifest.buildSeconds }, 'built model');
  // Listening before the worker announces itself, so that a signal right after that is a clean shutdown.
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  const started = await startWorker(config, model, o, logger);
  logger.info({ signal: await stopped, deadlineMs: config.worker.shutdownTimeoutMs }, 'shutting down: finishing the active batch');
  const report = await started.close();
  if (report.abandoned > 0) {
    logger.error({ abandoned: report.abandoned }, 'shutdown deadline passed: abandoned jobs return to the queue through stalled-job recovery');
  } else if (report.forced) logger.warn('shutdown deadline passed with no job held: connections cut');
  logger.info({ stats: started.worker.stats.snapshot() }, 'worker stopped');
  return report;
}

/** Non-zero when jobs were abandoned at shutdown. */
export function shutdownExitCode(report: ShutdownReport): number {
  return report.abandoned > 0 ? 1 : 0;
}
