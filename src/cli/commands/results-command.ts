import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { readOpenAiRefs } from '../../queue/openai-batch.js';
import { closeRedis } from '../../queue/redis-connection.js';
import { type JobRef, ResultCollector, distinctRefs, readJobRefs } from '../../queue/result-collector.js';
import { type FormatOptions, errorsOutOption, formatOption, openAiMapping, openAiModelOption, openOpenAiOutputs, resolveFormat } from '../batch-formats.js';
import { configOption, positiveInt, recheckOption } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { connectRedisClient } from '../redis-client.js';
import { type Output, type ResultFormat, genqueueResults, openAiResults, openOutput, summaryLine, writeResults } from '../result-lines.js';

interface ResultsOptions extends FormatOptions {
  idsFrom: string;
  wait?: boolean;
  timeoutMs?: number;
  recheckMs?: number;
  config?: string;
}

export function registerResultsCommand(program: Command): void {
  program
    .command('results')
    .description('collect the results of jobs enqueued earlier')
    .requiredOption('--ids-from <file.jsonl>', 'lines with an "id" (the enqueued file, or the --ids-out file of enqueue), or an OpenAI Batch file')
    .addOption(formatOption('the results\' lines: genqueue results or OpenAI Batch output'))
    .option('--wait', 'wait for unfinished jobs')
    .option('--out <results.jsonl>', 'output file (default: stdout); OpenAI Batch: appended, skipping requests it already holds')
    .addOption(errorsOutOption())
    .addOption(openAiModelOption())
    .option('--timeout-ms <ms>', 'with --wait, give up after this long', positiveInt('--timeout-ms'))
    .addOption(recheckOption())
    .addOption(configOption())
    .action(async (o: ResultsOptions) => {
      const config = loadConfig({ file: o.config });
      let refs: JobRef[];
      let format: ResultFormat = genqueueResults;
      let out: Output;
      let errors: Output | undefined;
      let close: () => Promise<void>;
      if ((await resolveFormat(o.idsFrom, o)) === 'openai') {
        // An interrupted `enqueue --wait` (or an earlier `results`) left some lines: only the others are written.
        const requests = await readOpenAiRefs(o.idsFrom, openAiMapping(config, o.model), { maxPromptChars: config.limits.maxPromptChars });
        const outputs = await openOpenAiOutputs(o);
        refs = requests.filter((r) => !outputs.written.has(r.customId));
        if (refs.length < requests.length) process.stderr.write(`already written: ${requests.length - refs.length} request(s)\n`);
        format = openAiResults(requests);
        ({ out, errors, close } = outputs);
      } else {
        refs = distinctRefs(await readJobRefs(o.idsFrom));
        out = await openOutput(o.out);
        close = () => out.close();
      }
      const connection = connectRedisClient(config);
      const bar = new ProgressBar('results');
      try {
        const collector = new ResultCollector({ connection });
        const summary = await writeResults(
          collector.collect(refs, { wait: Boolean(o.wait), timeoutMs: o.timeoutMs, recheckMs: o.recheckMs, onProgress: (d, t) => bar.update(d, t) }),
          { out: out.stream, errors: errors?.stream },
          refs.length,
          format,
        );
        bar.stop();
        process.stderr.write(`${summaryLine(summary)}\n`);
        if (summary.completed !== summary.jobs) process.exitCode = 1;
      } finally {
        try {
          await closeRedis(connection);
        } finally {
          await close();
        }
      }
    });
}
