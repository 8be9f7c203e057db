import { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load-config.js';
import { type DeviceSpec, formatDevice } from '../src/engine/execution-provider.js';
import { runsDeviceLoop } from '../src/engine/generator.js';
import type { ResolvedModel } from '../src/model/model-cache.js';
import { RedisServerProcess } from '../src/queue/redis-server-process.js';
import { startWorker } from '../src/worker/worker-process.js';
import type { BenchRow, BenchShape } from './bench-types.js';
import { gpuMemoryOf } from './gpu-memory.js';
import type { QueueClientInput, QueueClientOutput } from './queue-client-thread.js';

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
 * worker thread, warmed up at open), `jobs` jobs enqueued at once by a producer on another thread
 * (queue-client-thread.ts); generated tokens/s from the first enqueue to the last result read back.
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
      // The jobs' length, as a deployment would list its traffic's: first-shape costs are start-up, not throughput.
      warmupLengths: [o.shape.totalTokens],
      workerId: 'bench',
    },
    pino({ level: 'silent' }),
  );
  const { worker, engine } = started;
  if ((o.deviceLoopMaxBatch ?? 0) > 0 && !runsDeviceLoop(engine)) {
    await started.close();
    await redis.stop();
    throw new Error('queue-e2e: the device loop was requested but did not open');
  }
  const newTokens = o.shape.totalTokens - o.shape.promptTokens;
  try {
    const input: QueueClientInput = { redisUrl: redis.url, jobs: o.jobs, prompt: PROMPT, newTokens };
    const { seconds, tokens, failed } = await new Promise<QueueClientOutput>((resolve, reject) => {
      const client = new Worker(new URL('./queue-client-thread.js', import.meta.url), { workerData: input });
      client.once('message', resolve);
      client.once('error', reject);
      client.once('exit', (code) => reject(new Error(`queue-e2e producer thread exited (${code}) without a result`)));
    });
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
      variant: {
        jobs: o.jobs,
        concurrency: o.batch * o.concurrencyFactor,
        fetchers: worker.fetchers,
        warmupLength: o.shape.totalTokens,
        ...(o.deviceLoopMaxBatch ? { deviceLoop: true } : {}),
      },
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
