import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { closeRedis } from '../../queue/redis-connection.js';
import { ResultCollector, distinctRefs, readJobRefs } from '../../queue/result-collector.js';
import { configOption, positiveInt, recheckOption } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { connectRedisClient } from '../redis-client.js';
import { openOutput, summaryLine, writeResults } from '../result-lines.js';

interface ResultsOptions {
  idsFrom: string;
  wait?: boolean;
  out?: string;
  timeoutMs?: number;
  recheckMs?: number;
  config?: string;
}

export function registerResultsCommand(program: Command): void {
  program
    .command('results')
    .description('collect the results of jobs enqueued earlier')
    .requiredOption('--ids-from <file.jsonl>', 'lines with an "id" (the enqueued file, or the --ids-out file of enqueue)')
    .option('--wait', 'wait for unfinished jobs')
    .option('--out <results.jsonl>', 'output file (default: stdout)')
    .option('--timeout-ms <ms>', 'with --wait, give up after this long', positiveInt('--timeout-ms'))
    .addOption(recheckOption())
    .addOption(configOption())
    .action(async (o: ResultsOptions) => {
      const config = loadConfig({ file: o.config });
      const refs = distinctRefs(await readJobRefs(o.idsFrom));
      const connection = connectRedisClient(config);
      const bar = new ProgressBar('results');
      const out = openOutput(o.out);
      try {
        const collector = new ResultCollector({ connection });
        const summary = await writeResults(
          collector.collect(refs, { wait: Boolean(o.wait), timeoutMs: o.timeoutMs, recheckMs: o.recheckMs, onProgress: (d, t) => bar.update(d, t) }),
          out.stream,
          refs.length,
        );
        bar.stop();
        process.stderr.write(`${summaryLine(summary)}\n`);
        if (summary.completed !== summary.jobs) process.exitCode = 1;
      } finally {
        await out.close();
        await closeRedis(connection);
      }
    });
}
