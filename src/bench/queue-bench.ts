import { join } from 'node:path';
import { pino } from 'pino';
import type { DeviceSpec } from '../engine/execution-provider.js';
import { ThreadedGenerator } from '../engine/threaded-generator.js';
import { JobProducer } from '../queue/job-producer.js';
import { jobFromFields } from '../queue/job-schema.js';
import { createRedisConnection } from '../queue/redis-connection.js';
import { RedisServerProcess } from '../queue/redis-server-process.js';
import { ResultCollector } from '../queue/result-collector.js';
import { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { GenerationWorker } from '../worker/generation-worker.js';
import type { BenchRow, BenchShape } from './bench-types.js';
import { gpuMemoryOf } from './gpu-memory.js';

export interface QueueBenchOptions {
  readonly modelDir: string;
  readonly device: DeviceSpec;
  readonly batch: number;
  readonly jobs: number;
  readonly shape: BenchShape;
  /** BullMQ concurrency as a multiple of the batch size. */
  readonly concurrencyFactor: number;
  /** BullMQ Workers per queue. */
  readonly fetchers?: number;
}

const PROMPT = 'Here is some text to encode Hello World';

/**
 * Through the queue: a private redis-server, one worker (engine in its worker thread), `jobs` jobs enqueued at
 * once; generated tokens/s from the first enqueue to the last result read back.
 */
export async function queueE2eRow(o: QueueBenchOptions): Promise<BenchRow> {
  const redis = await RedisServerProcess.start();
  const connection = createRedisConnection(redis.url);
  const engine = await ThreadedGenerator.open(o.modelDir, { device: o.device });
  const tokenizer = TextTokenizer.fromFile(join(o.modelDir, engine.manifest.files.tokenizer));
  const worker = new GenerationWorker({
    connection,
    engine,
    tokenizer,
    modelName: 'bench',
    maxBatch: o.batch,
    maxWaitMs: 50,
    concurrency: o.batch * o.concurrencyFactor,
    fetchers: o.fetchers,
    logger: pino({ level: 'silent' }),
  });
  const newTokens = o.shape.totalTokens - o.shape.promptTokens;
  try {
    // Warm the engine up outside the timed part, as the engine rows do.
    await engine.generate([{ promptIds: await tokenizer.encode(PROMPT), maxNewTokens: 4, minNewTokens: 4, repetitionPenalty: 1, search: { kind: 'greedy' } }]);
    worker.start();
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
      variant: { jobs: o.jobs, concurrency: o.batch * o.concurrencyFactor, fetchers: o.fetchers ?? 1 },
      gpuMemoryMiB: gpuMemoryOf(),
      note:
        `${o.jobs} jobs in ${seconds.toFixed(2)} s; ${stats.batches} batches, mean batch ${stats.meanBatchSize.toFixed(1)}, ` +
        `graph time ${(stats.busyMs / 1000).toFixed(2)} s` +
        (failed ? `; ${failed} jobs failed` : ''),
    };
  } finally {
    await worker.close();
    await engine.close();
    await connection.quit();
    await redis.stop();
  }
}
