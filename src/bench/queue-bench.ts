import { pino } from 'pino';
import { loadConfig } from '../config/load-config.js';
import { type DeviceSpec, formatDevice } from '../engine/execution-provider.js';
import { runsDeviceLoop } from '../engine/generator.js';
import type { ResolvedModel } from '../model/model-cache.js';
import { JobProducer } from '../queue/job-producer.js';
import { jobFromFields } from '../queue/job-schema.js';
import { RedisServerProcess } from '../queue/redis-server-process.js';
import { ResultCollector } from '../queue/result-collector.js';
import { startWorker } from '../worker/worker-process.js';
import type { BenchRow, BenchShape } from './bench-types.js';
import { gpuMemoryOf } from './gpu-memory.js';

export interface QueueBenchOptions {
  readonly model: ResolvedModel & { name: string };
  readonly device: DeviceSpec;
  readonly batch: number;
  readonly jobs: number;
  readonly shape: BenchShape;
  /** BullMQ concurrency as a multiple of the batch size. */
  readonly concurrencyFactor: number;
  /** BullMQ Workers per queue. */
  readonly fetchers?: number;
  /** Greedy batches up to this size use the native device loop (0: GreedySearch). */
  readonly deviceLoopMaxBatch?: number;
}

const PROMPT = 'Here is some text to encode Hello World';

/**
 * Through the queue: a private redis-server, one worker started as `genqueue worker` starts it (engine in its
 * worker thread, warmed up at open), `jobs` jobs enqueued at once; generated tokens/s from the first enqueue to
 * the last result read back.
 */
export async function queueE2eRow(o: QueueBenchOptions): Promise<BenchRow> {
  const redis = await RedisServerProcess.start();
  const started = await startWorker(
    loadConfig({ env: {} }),
    o.model,
    {
      device: formatDevice(o.device),
      redisUrl: redis.url,
      maxBatch: o.batch,
      maxWaitMs: 50,
      concurrency: o.batch * o.concurrencyFactor,
      fetchers: o.fetchers,
      deviceLoopMaxBatch: o.deviceLoopMaxBatch ?? 0,
      workerId: 'bench',
    },
    pino({ level: 'silent' }),
  );
  const { connection, worker, engine } = started;
  if ((o.deviceLoopMaxBatch ?? 0) > 0 && !runsDeviceLoop(engine)) {
    await started.close();
    await redis.stop();
    throw new Error('queue-e2e: the device loop was requested but did not open');
  }
  const newTokens = o.shape.totalTokens - o.shape.promptTokens;
  try {
    const jobs = Array.from({ length: o.jobs }, (_, i) =>
      jobFromFields({ id: `bench-${i}`, prompt: PROMPT, max_new_tokens: newTokens, min_new_tokens: newTokens }),
    );
    const t0 = performance.now();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs);
    await producer.close();
    let tokens = 0;
    let failed = 0;
    for await (const r of new ResultCollector({ connection }).collect(placed, { wait: true, timeoutMs: 540_000 })) {
      if (r.status === 'completed') tokens += r.result.tokenIds.length;
      else failed++;
    }
    const seconds = (performance.now() - t0) / 1000;
    const stats = worker.stats.snapshot();
    return {
      name: 'queue-e2e',
      batch: o.batch,
      status: failed ? 'failed' : 'ok',
      secondsPerBatch: seconds / Math.ceil(o.jobs / o.batch),
      newTokensPerSecond: tokens / seconds,
      precision: engine.manifest.spec.precision,
      promptTokens: o.shape.promptTokens,
      totalTokens: o.shape.totalTokens,
      variant: { jobs: o.jobs, concurrency: o.batch * o.concurrencyFactor, fetchers: worker.fetchers, ...(o.deviceLoopMaxBatch ? { deviceLoop: true } : {}) },
      gpuMemoryMiB: gpuMemoryOf(),
      note:
        `${o.jobs} jobs in ${seconds.toFixed(2)} s; ${stats.batches} batches, mean batch ${stats.meanBatchSize.toFixed(1)}, ` +
        `graph time ${(stats.busyMs / 1000).toFixed(2)} s` +
        (failed ? `; ${failed} jobs failed` : ''),
    };
  } finally {
    await started.close();
    await redis.stop();
  }
}
