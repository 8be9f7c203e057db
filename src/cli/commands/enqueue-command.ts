import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { InvalidJobsError, JobProducer, describeConflict } from '../../queue/job-producer.js';
import { closeRedis } from '../../queue/redis-connection.js';
import { ResultCollector, distinctRefs } from '../../queue/result-collector.js';
import { configOption, positiveInt, recheckOption } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { connectRedisClient } from '../redis-client.js';
import { openOutput, summaryLine, writeResults } from '../result-lines.js';

interface EnqueueOptions {
  wait?: boolean;
  out?: string;
  skipInvalid?: boolean;
  idsOut?: string;
  chunkSize: number;
  timeoutMs?: number;
  recheckMs?: number;
  config?: string;
}

export function registerEnqueueCommand(program: Command): void {
  program
    .command('enqueue')
    .description('validate a .jsonl file of jobs and add them to the queue (REDIS_URL)')
    .argument('<file.jsonl>', 'lines of {"id"?, "prompt", "max_new_tokens"?, "decoding"?, "model"?, ...}')
    .option('--wait', 'wait for every job and write its result (exit code 1 unless every job completed)')
    .option('--out <results.jsonl>', 'where --wait writes results (default: stdout)')
    .option('--skip-invalid', 'enqueue the valid lines even if some are invalid (default: refuse the whole file)')
    .option('--ids-out <file.jsonl>', 'write {"id","line","queue"} per job, for `genqueue results --ids-from`')
    .option('--chunk-size <n>', 'jobs per addBulk call', positiveInt('--chunk-size'), 1000)
    .option('--timeout-ms <ms>', 'with --wait, give up after this long (unfinished jobs are written as pending)', positiveInt('--timeout-ms'))
    .addOption(recheckOption())
    .addOption(configOption())
    .action(async (file: string, o: EnqueueOptions) => {
      const config = loadConfig({ file: o.config });
      const connection = connectRedisClient(config);
      const producer = new JobProducer({ connection, maxPromptChars: config.limits.maxPromptChars });
      const bar = new ProgressBar('enqueue');
      try {
        let report;
        try {
          report = await producer.enqueueFile(file, {
            chunkSize: o.chunkSize,
            skipInvalid: o.skipInvalid,
            idsOut: o.idsOut,
            // Only a caller that waits needs every id in memory; otherwise the file streams through.
            keepJobs: Boolean(o.wait),
            onProgress: (d, t) => bar.update(d, t),
            onRefused: (r) => process.stderr.write(`${file}:${r.line}: refused: ${r.error}\n`),
            onConflict: (c) => process.stderr.write(`${file}:${c.line}: warning: ${describeConflict(c)}\n`),
          });
        } catch (e) {
          if (e instanceof InvalidJobsError) process.exitCode = 2;
          throw e;
        } finally {
          bar.stop();
        }
        const conflicts = report.conflicts ? ` (${report.conflicts} with different content, not enqueued)` : '';
        process.stderr.write(`enqueued ${report.enqueued}, already queued ${report.duplicates}${conflicts}, refused ${report.refused}\n`);
        if (report.refused) process.exitCode = 2;
        if (!o.wait) return;
        const refs = distinctRefs(report.jobs ?? []);
        const collector = new ResultCollector({ connection });
        const out = openOutput(o.out);
        const waitBar = new ProgressBar('results');
        try {
          const summary = await writeResults(
            collector.collect(refs, { wait: true, timeoutMs: o.timeoutMs, recheckMs: o.recheckMs, onProgress: (d, t) => waitBar.update(d, t) }),
            out.stream,
            refs.length,
          );
          process.stderr.write(`${summaryLine(summary)}\n`);
          if (summary.completed !== summary.jobs) process.exitCode = 1;
        } finally {
          waitBar.stop();
          await out.close();
        }
      } finally {
        await producer.close();
        await closeRedis(connection);
      }
    });
}
