import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { InvalidJobsError, JobProducer } from '../../queue/job-producer.js';
import { closeRedis } from '../../queue/redis-connection.js';
import { ResultCollector } from '../../queue/result-collector.js';
import { configOption, positiveInt } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { connectRedisClient } from '../redis-client.js';
import { openOutput, writeResults } from '../result-lines.js';

interface EnqueueOptions {
  wait?: boolean;
  out?: string;
  skipInvalid?: boolean;
  idsOut?: string;
  chunkSize: number;
  timeoutMs?: number;
  config?: string;
}

export function registerEnqueueCommand(program: Command): void {
  program
    .command('enqueue')
    .description('validate a .jsonl file of jobs and add them to the queue (REDIS_URL)')
    .argument('<file.jsonl>', 'lines of {"id"?, "prompt", "max_new_tokens"?, "decoding"?, "model"?, ...}')
    .option('--wait', 'wait for every job and write its result')
    .option('--out <results.jsonl>', 'where --wait writes results (default: stdout)')
    .option('--skip-invalid', 'enqueue the valid lines even if some are invalid (default: refuse the whole file)')
    .option('--ids-out <file.jsonl>', 'write {"id","line","queue"} per job, for `genqueue results --ids-from`')
    .option('--chunk-size <n>', 'jobs per addBulk call', positiveInt('--chunk-size'), 1000)
    .option('--timeout-ms <ms>', 'with --wait, give up after this long (unfinished jobs are written as pending)', positiveInt('--timeout-ms'))
    .addOption(configOption())
    .action(async (file: string, o: EnqueueOptions) => {
      const config = loadConfig({ file: o.config });
      const connection = connectRedisClient(config);
      const producer = new JobProducer({ connection });
      const bar = new ProgressBar('enqueue');
      try {
        let report;
        try {
          report = await producer.enqueueFile(file, {
            chunkSize: o.chunkSize,
            skipInvalid: o.skipInvalid,
            idsOut: o.idsOut,
            onProgress: (d, t) => bar.update(d, t),
          });
        } catch (e) {
          if (e instanceof InvalidJobsError) process.exitCode = 2;
          throw e;
        } finally {
          bar.stop();
        }
        for (const r of report.refused) process.stderr.write(`${file}:${r.line}: refused: ${r.error}\n`);
        process.stderr.write(`enqueued ${report.enqueued}, already queued ${report.duplicates}, refused ${report.refused.length}\n`);
        if (report.refused.length) process.exitCode = 2;
        if (!o.wait) return;
        const collector = new ResultCollector({ connection });
        const out = openOutput(o.out);
        const waitBar = new ProgressBar('results');
        const summary = await writeResults(
          collector.collect(report.jobs, { wait: true, timeoutMs: o.timeoutMs, onProgress: (d, t) => waitBar.update(d, t) }),
          out.stream,
        );
        waitBar.stop();
        await out.close();
        process.stderr.write(`completed ${summary.completed}, failed ${summary.failed}, pending ${summary.pending}\n`);
        if (summary.failed || summary.pending) process.exitCode = 1;
      } finally {
        await producer.close();
        await closeRedis(connection);
      }
    });
}
