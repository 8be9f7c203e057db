import { parentPort, workerData } from 'node:worker_threads';
import { z } from 'zod';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { createRedisConnection } from '../src/queue/redis-connection.js';
import { ResultCollector } from '../src/queue/result-collector.js';

/**
 * The producer side of a queue-e2e run, on a thread of its own: in a deployment producers are other processes,
 * and sharing the worker's event loop would charge their JSON and Redis work to the worker. Enqueues `jobs`
 * copies of the prompt and reads every result back; reports the wall time from the first enqueue.
 */
const Input = z.object({ redisUrl: z.string(), jobs: z.number().int().positive(), prompt: z.string(), newTokens: z.number().int().positive() });
export type QueueClientInput = z.infer<typeof Input>;
export interface QueueClientOutput {
  readonly seconds: number;
  readonly tokens: number;
  readonly failed: number;
}

const input = Input.parse(workerData);
const connection = createRedisConnection(input.redisUrl);
const jobs = Array.from({ length: input.jobs }, (_, i) =>
  jobFromFields({ id: `bench-${i}`, prompt: input.prompt, max_new_tokens: input.newTokens, min_new_tokens: input.newTokens }),
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
const output: QueueClientOutput = { seconds: (performance.now() - t0) / 1000, tokens, failed };
await connection.quit();
parentPort!.postMessage(output);
