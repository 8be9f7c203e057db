import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { runWorkerProcess, shutdownExitCode, type WorkerProcessOptions } from '../../worker/worker-process.js';
import { createLogger } from '../logger.js';
import { configOption, deviceOption, nonNegativeInt, positiveInt, positiveIntList, precisionOption } from '../options.js';

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('serve generation jobs from Redis (REDIS_URL) with one model on one device')
    .option('--model <dir|name>', 'HF checkpoint dir, built model dir, or config name (default: config defaultModel)')
    .addOption(deviceOption())
    .option('--max-batch <b>', 'most jobs per graph run', positiveInt('--max-batch'))
    .option('--max-wait-ms <m>', 'how long a partial batch waits for more jobs', nonNegativeInt('--max-wait-ms'))
    .addOption(precisionOption())
    .option('--worker-id <id>', 'name shown in results and the dashboard')
    .option('--device-loop-max-batch <b>', 'greedy batches up to b use the native device loop (0 = off)', nonNegativeInt('--device-loop-max-batch'))
    .option('--warmup-lengths <list>', 'comma list of prompt + new token lengths to run once at --max-batch before taking jobs', positiveIntList('--warmup-lengths'))
    .addOption(configOption())
    .action(async (o: WorkerProcessOptions & { config?: string }) => {
      const config = loadConfig({ file: o.config });
      const report = await runWorkerProcess(config, o, createLogger(config.logLevel));
      process.exit(shutdownExitCode(report));
    });
}
