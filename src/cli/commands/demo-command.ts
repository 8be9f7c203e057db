import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { z } from 'zod';
import { loadConfig, redisConfigured } from '../../config/load-config.js';
import { DEMO_SHAPE, writeRandomGpt2Checkpoint } from '../../model/checkpoint/random-gpt2-checkpoint.js';
import { defaultCacheDir } from '../../model/model-cache.js';
import { JobProducer } from '../../queue/job-producer.js';
import { jobFromFields } from '../../queue/job-schema.js';
import { assertRedisReachable, redactUrl } from '../../queue/redis-connection.js';
import { RedisServerProcess } from '../../queue/redis-server-process.js';
import { ResultCollector } from '../../queue/result-collector.js';
import { startWorker } from '../../worker/worker-process.js';
import { createLogger } from '../logger.js';
import { resolveModelArg } from '../../model/model-reference.js';
import { configOption, deviceOption, positiveInt } from '../options.js';
import { ProgressBar } from '../progress-bar.js';

const DEMO_PROMPTS = fileURLToPath(new URL('../../../../config/demo-prompts.json', import.meta.url));
/** Its own BullMQ prefix, so a demo pointed at a shared Redis never hands its jobs to real workers. */
const DEMO_PREFIX = 'genqueue-demo';

interface DemoOptions {
  jobs: number;
  maxNewTokens: number;
  maxBatch?: number;
  device?: string;
  model?: string;
  config?: string;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('end to end on this machine: private redis-server (unless REDIS_URL), demo GPT-2, worker, jobs, results')
    .option('--jobs <n>', 'jobs to enqueue', positiveInt('--jobs'), 64)
    .option('--max-new-tokens <n>', 'tokens per job', positiveInt('--max-new-tokens'), 32)
    .option('--max-batch <b>', 'worker batch size (default: config)', positiveInt('--max-batch'))
    .option('--model <dir|name>', 'use this model instead of the built-in demo GPT-2 (random weights)')
    .addOption(deviceOption())
    .addOption(configOption())
    .action(async (o: DemoOptions) => {
      const config = loadConfig({ file: o.config });
      const logger = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
      const out = (line: string): boolean => process.stdout.write(`${line}\n`);
      const started = performance.now();

      let redisServer: RedisServerProcess | undefined;
      let redisUrl = config.redisUrl;
      if (!redisConfigured({ file: o.config })) {
        redisServer = await RedisServerProcess.start();
        redisUrl = redisServer.url;
        out(`redis: started a private redis-server on ${redisUrl}`);
      } else {
        await assertRedisReachable(redisUrl, { logger, tls: config.redisTls, giveUpAfterMs: config.redisConnectTimeoutMs });
        out(`redis: ${redactUrl(redisUrl)}`);
      }

      // Everything after the private redis-server starts stops it again, on every path (a failed build or start too).
      try {
        let modelArg = o.model ?? config.defaultModel;
        if (!modelArg) {
          const ckpt = join(config.cacheDir ?? defaultCacheDir(), 'demo-gpt2');
          if (!existsSync(join(ckpt, 'config.json'))) writeRandomGpt2Checkpoint(ckpt, DEMO_SHAPE);
          modelArg = ckpt;
        }
        const model = await resolveModelArg(modelArg, config, undefined, undefined, o.device);
        const s = model.manifest.spec;
        out(
          `model: ${model.name} (${s.architecture}, ${s.numLayers} layers × ${s.hiddenSize}, ${s.precision}) ` +
            (model.built ? `built in ${model.manifest.buildSeconds.toFixed(2)} s` : 'from the build cache') +
            (o.model || config.defaultModel ? '' : ' — random weights: the text is gibberish by design'),
        );

        const { engine, slotEngine, worker, connection, close } = await startWorker(
          config,
          model,
          { device: o.device, maxBatch: o.maxBatch, workerId: 'demo-worker', redisUrl, prefix: DEMO_PREFIX },
          logger,
        );
        try {
          out(
            slotEngine
              ? `worker: ${slotEngine.device}, ${slotEngine.limits.slots} slots (continuous batching)`
              : `worker: ${engine.device}, max batch ${o.maxBatch ?? config.worker.maxBatch}`,
          );
          const prompts = z.array(z.string()).parse(JSON.parse(readFileSync(DEMO_PROMPTS, 'utf8')));
          const runId = Date.now().toString(36);
          const jobs = Array.from({ length: o.jobs }, (_, i) =>
            jobFromFields({ id: `demo-${runId}-${i}`, prompt: prompts[i % prompts.length], max_new_tokens: o.maxNewTokens }),
          );
          const producer = new JobProducer({ connection, prefix: DEMO_PREFIX });
          const t0 = performance.now();
          const placed = await producer.enqueueJobs(jobs);
          await producer.close();
          out(`enqueued ${placed.length} jobs`);

          const collector = new ResultCollector({ connection, prefix: DEMO_PREFIX });
          const bar = new ProgressBar('jobs');
          let completed = 0;
          let failed = 0;
          let tokens = 0;
          const shown = new Set<string>();
          for await (const r of collector.collect(placed, { wait: true, timeoutMs: 600_000, onProgress: (d, t) => bar.update(d, t) })) {
            if (r.status === 'completed') {
              completed++;
              tokens += r.result.tokenIds.length;
              // Show one result per distinct prompt.
              if (!shown.has(r.result.prompt)) {
                shown.add(r.result.prompt);
                bar.stop();
                out(`  ${JSON.stringify(r.result.prompt)} → ${JSON.stringify(r.result.text.slice(0, 80))} [${r.result.finishReason}, ${slotEngine ? 'slots' : 'batch'} ${r.result.timings.batchSize}]`);
              }
            } else {
              failed++;
              out(`  ${r.id}: ${r.status === 'failed' ? r.error : r.status}`);
            }
          }
          bar.stop();
          const seconds = (performance.now() - t0) / 1000;
          const st = worker.stats.snapshot();
          out(
            `done: ${completed} completed, ${failed} failed in ${seconds.toFixed(2)} s — ${(completed / seconds).toFixed(1)} jobs/s, ` +
              `${(tokens / seconds).toFixed(0)} generated tokens/s end to end (${st.tokensPerSecond.toFixed(0)} tokens/s of graph time), ` +
              `${slotEngine ? `${slotEngine.limits.slots} slots` : `${st.batches} batches, mean batch ${st.meanBatchSize.toFixed(1)}`}; ` +
              `total ${((performance.now() - started) / 1000).toFixed(1)} s`,
          );
          if (failed) process.exitCode = 1;
        } finally {
          await close();
        }
      } finally {
        await redisServer?.stop();
      }
    });
}
