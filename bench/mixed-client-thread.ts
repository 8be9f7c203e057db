import { parentPort, workerData } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { createRedisConnection } from '../src/queue/redis-connection.js';
import { type JobRef, ResultCollector } from '../src/queue/result-collector.js';

/**
 * The producer side of a mixed-workload row, on a thread of its own (producers are other processes in a
 * deployment). Enqueues the jobs at once (a burst) or each at its arrival time (Poisson arrivals), reads every
 * result back, and reports throughput and each job's latency and time to first token from its result's timings.
 */
const Input = z.object({
  redisUrl: z.string(),
  jobs: z.array(z.object({ id: z.string(), prompt: z.string(), maxNewTokens: z.number().int().positive() })),
  /** Milliseconds after the start at which each job is enqueued; absent: all at once. */
  arrivalsMs: z.array(z.number()).optional(),
  /** Past this, the jobs still unfinished are reported as pending. */
  timeoutMs: z.number().int().positive(),
});
export type MixedClientInput = z.infer<typeof Input>;

export interface MixedClientOutput {
  /** From the first enqueue to the last result read back. */
  readonly seconds: number;
  /** From the first job's enqueueing to the last one's end, by the results' own timings. */
  readonly spanSeconds: number;
  readonly enqueueSeconds: number;
  readonly completed: number;
  readonly failed: number;
  readonly pending: number;
  readonly firstError?: string;
  /** Generated tokens of the completed jobs. */
  readonly tokens: number;
  /** Per completed job: from enqueueing to its result, and to its first token (batches: the result). */
  readonly latencyMs: number[];
  readonly ttftMs: number[];
}

const input = Input.parse(workerData);
const connection = createRedisConnection(input.redisUrl);
// No min_new_tokens: the batches path groups jobs by it (with each job's own, no two would share a batch). With
// random weights a row rarely meets EOS, and both paths, greedy on one model, stop at the same one.
const jobs = input.jobs.map((j) => jobFromFields({ id: j.id, prompt: j.prompt, max_new_tokens: j.maxNewTokens }));
const producer = new JobProducer({ connection });
const t0 = performance.now();
const refs: JobRef[] = [];
if (!input.arrivalsMs) {
  refs.push(...(await producer.enqueueJobs(jobs, 1000)));
} else {
  // Every job whose arrival time has come goes in one addBulk; then wait for the next arrival.
  const arrivals = input.arrivalsMs;
  let next = 0;
  while (next < jobs.length) {
    const now = performance.now() - t0;
    let end = next;
    while (end < jobs.length && arrivals[end]! <= now) end++;
    if (end > next) {
      refs.push(...(await producer.enqueueJobs(jobs.slice(next, end), 1000)));
      next = end;
    } else {
      await sleep(Math.max(1, arrivals[next]! - now));
    }
  }
}
const enqueueSeconds = (performance.now() - t0) / 1000;
await producer.close();
let tokens = 0;
let completed = 0;
let failed = 0;
let pending = 0;
let firstError: string | undefined;
let firstQueued = Infinity;
let lastFinished = 0;
const latencyMs: number[] = [];
const ttftMs: number[] = [];
const elapsed = performance.now() - t0;
for await (const r of new ResultCollector({ connection }).collect(refs, { wait: true, timeoutMs: Math.max(1, input.timeoutMs - elapsed) })) {
  if (r.status === 'completed') {
    completed++;
    tokens += r.result.tokenIds.length;
    const t = r.result.timings;
    latencyMs.push(t.finishedAt - t.queuedAt);
    ttftMs.push((t.firstTokenAt ?? t.finishedAt) - t.queuedAt);
    firstQueued = Math.min(firstQueued, t.queuedAt);
    lastFinished = Math.max(lastFinished, t.finishedAt);
  } else if (r.status === 'pending') {
    pending++;
  } else {
    failed++;
    firstError ??= 'error' in r ? r.error : r.status;
  }
}
const output: MixedClientOutput = {
  seconds: (performance.now() - t0) / 1000,
  spanSeconds: completed > 0 ? (lastFinished - firstQueued) / 1000 : 0,
  enqueueSeconds,
  completed,
  failed,
  pending,
  ...(firstError === undefined ? {} : { firstError }),
  tokens,
  latencyMs,
  ttftMs,
};
await connection.quit();
parentPort!.postMessage(output);
