import { join } from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { parseDevice } from '../../engine/execution-provider.js';
import { ThreadedGenerator } from '../../engine/threaded-generator.js';
import { createRedisConnection } from '../../queue/redis-connection.js';
import { TextTokenizer } from '../../tokenizer/text-tokenizer.js';
import { GenerationWorker } from '../../worker/generation-worker.js';
import { createLogger } from '../logger.js';
import { resolveModelArg } from '../model-source.js';
import { configOption, deviceOption, nonNegativeInt, positiveInt, precisionOption } from '../options.js';

interface WorkerOptions {
  model?: string;
  device?: string;
  maxBatch?: number;
  maxWaitMs?: number;
  precision?: 'fp32' | 'fp16';
  workerId?: string;
  config?: string;
}

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('serve generation jobs from Redis (REDIS_URL) with one model on one device')
    .option('--model <dir|name>', 'HF checkpoint dir, built model dir, or config name (default: config defaultModel)')
    .addOption(deviceOption())
    .option('--max-batch <b>', 'most jobs per graph run (also the BullMQ concurrency)', positiveInt('--max-batch'))
    .option('--max-wait-ms <m>', 'how long a partial batch waits for more jobs', nonNegativeInt('--max-wait-ms'))
    .addOption(precisionOption())
    .option('--worker-id <id>', 'name shown in results and the dashboard')
    .addOption(configOption())
    .action(async (o: WorkerOptions) => {
      const config = loadConfig({ file: o.config });
      const logger = createLogger(config.logLevel);
      const modelArg = o.model ?? config.defaultModel;
      if (!modelArg) throw new Error('no model: pass --model or set defaultModel in the config (or GENQUEUE_MODEL)');
      const model = await resolveModelArg(modelArg, config, o.precision);
      if (model.built) logger.info({ dir: model.dir, seconds: model.manifest.buildSeconds }, 'built model');
      const device = parseDevice(o.device ?? config.worker.device);
      const engine = await ThreadedGenerator.open(model.dir, { device, onWarning: (m) => logger.warn(m) });
      const connection = createRedisConnection(config.redisUrl);
      const worker = new GenerationWorker({
        connection,
        engine,
        tokenizer: TextTokenizer.fromFile(join(model.dir, model.manifest.files.tokenizer)),
        modelName: model.name,
        maxBatch: o.maxBatch ?? config.worker.maxBatch,
        maxWaitMs: o.maxWaitMs ?? config.worker.maxWaitMs,
        workerId: o.workerId ?? config.worker.id,
        logger,
      });
      worker.start();
      await new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          logger.info({ signal }, 'shutting down: finishing active jobs');
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await worker.close();
      await engine.close();
      await connection.quit();
      logger.info({ stats: worker.stats.snapshot() }, 'worker stopped');
    });
}
