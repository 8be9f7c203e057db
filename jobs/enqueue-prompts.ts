/**
 * A programmatic producer: enqueue prompts from code rather than a file, then wait for their results.
 *   REDIS_URL=redis://127.0.0.1:6379 node dist/jobs/enqueue-prompts.js "First prompt" "Second prompt"
 */
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { createRedisConnection, DEFAULT_REDIS_URL } from '../src/queue/redis-connection.js';
import { ResultCollector } from '../src/queue/result-collector.js';

const prompts = process.argv.slice(2);
if (prompts.length === 0) {
  process.stderr.write('usage: enqueue-prompts.js PROMPT [PROMPT…]\n');
  process.exit(2);
}
const jobs = prompts.map((prompt, i) => {
  try {
    return jobFromFields({ prompt, max_new_tokens: 32 });
  } catch (e) {
    throw new Error(`prompt ${i + 1}: ${(e as Error).message}`);
  }
});
const connection = createRedisConnection(process.env.REDIS_URL ?? DEFAULT_REDIS_URL);
const producer = new JobProducer({ connection });
const placed = await producer.enqueueJobs(jobs);
await producer.close();
for await (const r of new ResultCollector({ connection }).collect(placed, { wait: true })) {
  process.stdout.write(`${JSON.stringify(r.status === 'completed' ? { id: r.id, text: r.result.text } : r)}\n`);
}
await connection.quit();
