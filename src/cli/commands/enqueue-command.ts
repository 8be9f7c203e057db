import { type Command, InvalidArgumentError } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { InvalidJobsError, JobProducer, type RefusedLine, defaultIdsFiles, describeConflict } from '../../queue/job-producer.js';
import { defaultCacheDir } from '../../model/model-cache.js';
import { closeRedis } from '../../queue/redis-connection.js';
import { ResultCollector, distinctRefs } from '../../queue/result-collector.js';
import { GENQUEUE_LINES, type KeepJobs, MAX_ATTEMPTS, MAX_DELAY_MS, MAX_PRIORITY } from '../../queue/job-schema.js';
import { openAiLines, openAiRefOfIdsLine, openAiRefusedLine } from '../../queue/openai-batch.js';
import { type FormatOptions, errorsOutOption, formatOption, openAiMapping, openAiModelOption, openOpenAiOutputs, resolveFormat } from '../batch-formats.js';
import { configOption, positiveInt, recheckOption } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { connectRedisClient } from '../redis-client.js';
import { type Output, genqueueResults, openAiResults, openOutput, summaryLine, writeLine, writeResults } from '../result-lines.js';
import { streamPrinter } from '../stream-lines.js';

interface EnqueueOptions extends FormatOptions {
  wait?: boolean;
  stream?: boolean;
  out?: string;
  skipInvalid?: boolean;
  idsOut?: string;
  chunkSize: number;
  timeoutMs?: number;
  recheckMs?: number;
  config?: string;
  priority?: number;
  delayMs?: number;
  attempts?: number;
  keepCompleted?: KeepJobs;
  keepFailed?: KeepJobs;
}

/** An integer flag within [min, max], refused at parse time like the job line's field would be. */
function intIn(flag: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${flag} must be an integer from ${min} to ${max}`);
    return n;
  };
}

const SECONDS_PER_UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** `age=7d`, `count=1000`, both (`age=12h,count=100`), or `all`: how many finished jobs Redis keeps. */
export function parseKeepJobs(flag: string): (value: string) => KeepJobs {
  return (value: string) => {
    if (value.trim() === 'all') return {};
    const keep: { age?: number; count?: number } = {};
    for (const part of value.split(',').map((p) => p.trim())) {
      const age = /^age=(\d+)([smhd]?)$/.exec(part);
      const count = /^count=(\d+)$/.exec(part);
      if (age) keep.age = Number(age[1]) * SECONDS_PER_UNIT[age[2] || 's']!;
      else if (count) keep.count = Number(count[1]);
      else throw new InvalidArgumentError(`${flag}: expected age=N[s|m|h|d], count=N, both (comma-separated) or all; got "${part}"`);
    }
    if (keep.age === 0 || keep.count === 0) throw new InvalidArgumentError(`${flag}: age and count must be at least 1`);
    return keep;
  };
}

export function registerEnqueueCommand(program: Command): void {
  program
    .command('enqueue')
    .description('validate a .jsonl file of jobs and add them to the queue (REDIS_URL)')
    .argument('<file.jsonl>', 'lines of {"id"?, "prompt", "max_new_tokens"?, "decoding"?, "model"?, ...}, or OpenAI Batch requests')
    .addOption(formatOption('the file\'s lines: genqueue jobs or OpenAI Batch requests'))
    .option('--wait', 'wait for every job and write its result (exit code 1 unless every job completed)')
    .option('--out <results.jsonl>', 'where --wait writes results (default: stdout); OpenAI Batch: appended, skipping requests it already holds')
    .addOption(errorsOutOption())
    .addOption(openAiModelOption())
    .option('--stream', 'with --wait, print the text of jobs with "stream": true as it is generated, to stderr: `<id>: "<new text>"`')
    .option('--skip-invalid', 'enqueue the valid lines even if some are invalid (default: refuse the whole file)')
    .option('--ids-out <file.jsonl>', 'write {"id","line","queue"} per job, for `genqueue results --ids-from` (default without --wait: <file>.ids.jsonl)')
    .option('--chunk-size <n>', 'jobs per addBulk call', positiveInt('--chunk-size'), 1000)
    .option('--timeout-ms <ms>', 'with --wait, give up after this long (unfinished jobs are written as pending)', positiveInt('--timeout-ms'))
    .option('--priority <n>', 'priority of every job: 1 is the highest, 2097151 the lowest (a line\'s "priority" wins)', intIn('--priority', 1, MAX_PRIORITY))
    .option('--delay-ms <ms>', 'jobs wait this long before a worker may take them (a line\'s "delay_ms" wins)', intIn('--delay-ms', 0, MAX_DELAY_MS))
    .option('--attempts <n>', 'tries per job for transient failures (default: config jobs.attempts; a line\'s "attempts" wins)', intIn('--attempts', 1, MAX_ATTEMPTS))
    .option('--keep-completed <spec>', 'completed jobs kept in Redis: age=N[s|m|h|d], count=N, both, or all (default: config retention.completed)', parseKeepJobs('--keep-completed'))
    .option('--keep-failed <spec>', 'failed jobs kept in Redis, as --keep-completed (default: config retention.failed)', parseKeepJobs('--keep-failed'))
    .addOption(recheckOption())
    .addOption(configOption())
    .action(async (file: string, o: EnqueueOptions) => {
      const config = loadConfig({ file: o.config });
      if (o.stream && !o.wait) throw new Error('--stream needs --wait');
      const openAi = (await resolveFormat(file, o)) === 'openai';
      const openOutputs = () => openOpenAiOutputs({ ...o, out: o.wait ? o.out : undefined });
      // With --skip-invalid, refused OpenAI requests become error lines as the file is read: the outputs (appended
      // to) open first. Otherwise they open once the file is enqueued, so a refused file leaves no files behind.
      let outputs = openAi && o.skipInvalid && (o.wait || o.errorsOut !== undefined) ? await openOutputs() : undefined;
      const onRefused = async (r: RefusedLine): Promise<void> => {
        process.stderr.write(`${file}:${r.line}: refused: ${r.error}\n`);
        const to = outputs && (outputs.errors ?? (o.wait ? outputs.out : undefined));
        const customId = r.tags?.custom_id;
        if (!to || (customId !== undefined && outputs!.written.has(customId))) return;
        await writeLine(to.stream, openAiRefusedLine(customId, r.line, r.error).line);
      };
      const connection = connectRedisClient(config);
      const producer = new JobProducer({
        connection,
        maxPromptChars: config.limits.maxPromptChars,
        priority: o.priority,
        delayMs: o.delayMs,
        attempts: o.attempts ?? config.jobs.attempts,
        backoffMs: config.jobs.backoffMs,
        keepCompleted: o.keepCompleted ?? config.retention.completed,
        keepFailed: o.keepFailed ?? config.retention.failed,
      });
      const bar = new ProgressBar('enqueue');
      try {
        let report;
        try {
          report = await producer.enqueueFile(file, {
            format: openAi ? openAiLines(openAiMapping(config, o.model)) : GENQUEUE_LINES,
            chunkSize: o.chunkSize,
            skipInvalid: o.skipInvalid,
            // Without --wait, the ids are the only way back to the results of lines without an id: always written.
            idsOut: o.idsOut ?? (o.wait ? undefined : defaultIdsFiles(file, config.cacheDir ?? defaultCacheDir())),
            // Only a caller that waits needs every id in memory; otherwise the file streams through.
            keepJobs: Boolean(o.wait),
            onProgress: (d, t) => bar.update(d, t),
            onRefused,
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
        if (report.idsFile !== undefined && o.idsOut === undefined) {
          process.stderr.write(`ids: ${report.idsFile} (genqueue results --ids-from ${report.idsFile} fetches the results)\n`);
        }
        if (!o.wait) return;
        let refs = distinctRefs(report.jobs ?? []);
        let format = genqueueResults;
        if (openAi) {
          const { written } = (outputs ??= await openOutputs());
          // Each job's line tags (custom_id, url) make the same entry an --ids-out file holds.
          const requests = distinctRefs(
            (report.jobs ?? []).map((j) => {
              const parsed = openAiRefOfIdsLine({ id: j.id, queue: j.queue, ...j.tags });
              if (!parsed.ok) throw new Error(`job ${j.id}: ${parsed.error}`);
              return parsed.ref;
            }),
          );
          refs = requests.filter((r) => !written.has(r.customId));
          if (refs.length < requests.length) process.stderr.write(`already written: ${requests.length - refs.length} request(s)\n`);
          format = openAiResults(requests);
        }
        const out: Output = outputs?.out ?? (await openOutput(o.out));
        const collector = new ResultCollector({ connection });
        // Streamed text and a redrawn bar would garble each other on stderr.
        const waitBar = o.stream ? undefined : new ProgressBar('results');
        try {
          const summary = await writeResults(
            collector.collect(refs, {
              wait: true,
              timeoutMs: o.timeoutMs,
              recheckMs: o.recheckMs,
              onProgress: (d, t) => waitBar?.update(d, t),
              ...(o.stream ? { onPartial: streamPrinter(process.stderr) } : {}),
            }),
            { out: out.stream, errors: outputs?.errors?.stream },
            refs.length,
            format,
          );
          process.stderr.write(`${summaryLine(summary)}\n`);
          if (summary.completed !== summary.jobs) process.exitCode = 1;
        } finally {
          waitBar?.stop();
          if (!outputs) await out.close();
        }
      } finally {
        try {
          await producer.close();
          await closeRedis(connection);
        } finally {
          await outputs?.close();
        }
      }
    });
}
