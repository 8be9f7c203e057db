/**
 * The README's library example: enqueue a thousand prompts and await their results, through the package's
 * public API (`import … from 'genqueue'`). Start a worker first (`genqueue worker --model …`, or startWorker()).
 *   REDIS_URL=redis://127.0.0.1:6379 node dist/jobs/examples/library-example.js
 * EXAMPLE_JOBS and EXAMPLE_MAX_NEW_TOKENS change the counts (defaults 1000 and 32).
 */
import { JobProducer, ResultCollector, createRedisConnection, jobFromFields } from 'genqueue';

const count = Number(process.env.EXAMPLE_JOBS ?? 1000);
const maxNewTokens = Number(process.env.EXAMPLE_MAX_NEW_TOKENS ?? 32);

const connection = createRedisConnection(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const producer = new JobProducer({ connection });
const prompts = Array.from({ length: count }, (_, i) => `Prompt number ${i}:`);
const jobs = await producer.enqueueJobs(prompts.map((prompt) => jobFromFields({ prompt, max_new_tokens: maxNewTokens })));
for await (const r of new ResultCollector({ connection }).collect(jobs, { wait: true })) {
  console.log(JSON.stringify(r.status === 'completed' ? { id: r.id, text: r.result.text } : r));
}
await producer.close();
await connection.quit();
