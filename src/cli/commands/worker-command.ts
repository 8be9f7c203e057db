import { type Command, Option } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { runWorkerProcess, shutdownExitCode, type WorkerProcessOptions } from '../../worker/worker-process.js';
import { createLogger } from '../logger.js';
import { configOption, deviceOption, nonNegativeInt, positiveInt, positiveIntList, precisionOption } from '../options.js';

/** The worker options that `genqueue workers` passes on unchanged to each worker process it starts. */
export function sharedWorkerOptions(): Option[] {
  return [
    new Option('--model <dir|name>', 'HF checkpoint dir, built model dir, or config name (default: config defaultModel)'),
    new Option('--engine <kind>', 'slots: continuous batching; batches: batches grouped by max_new_tokens; auto: slots where they can run (default: config worker.engine)').choices([
      'auto',
      'slots',
      'batches',
    ]),
    new Option('--slots <s>', 'rows of the continuous batch (default: config worker.slots, else 256 on CUDA, 8 on the CPU)').argParser(positiveInt('--slots')),
    new Option('--max-batch <b>', 'most jobs per graph run (with slots: per beam batch)').argParser(positiveInt('--max-batch')),
    new Option('--max-wait-ms <m>', 'how long a partial batch waits for more jobs').argParser(nonNegativeInt('--max-wait-ms')),
    precisionOption(),
    new Option('--device-loop-max-batch <b>', 'greedy batches up to b use the native device loop (0 = off)').argParser(
      nonNegativeInt('--device-loop-max-batch'),
    ),
    new Option('--warmup-lengths <list>', 'comma list of prompt + new token lengths to run once at --max-batch before taking jobs').argParser(
      positiveIntList('--warmup-lengths'),
    ),
    configOption(),
  ];
}

export function registerWorkerCommand(program: Command): void {
  const command = program
    .command('worker')
    .description('serve generation jobs from Redis (REDIS_URL) with one model on one device')
    .addOption(deviceOption())
    .option('--worker-id <id>', 'name shown in results and the dashboard')
    .option('--metrics-port <port>', 'serve /metrics and /healthz on this port (0: any free port)', nonNegativeInt('--metrics-port'));
  for (const option of sharedWorkerOptions()) command.addOption(option);
  command.action(async (o: WorkerProcessOptions & { config?: string }) => {
    const config = loadConfig({ file: o.config });
    const report = await runWorkerProcess(config, o, createLogger(config.logLevel));
    process.exit(shutdownExitCode(report));
  });
}
