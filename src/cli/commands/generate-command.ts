import { Option, type Command } from 'commander';
import { Generator } from '../../engine/generator.js';
import { parseDevice } from '../../engine/execution-provider.js';
import { type JobData, parseJob } from '../../queue/job-schema.js';
import { JsonlLines } from '../../queue/jsonl-lines.js';
import { TextTokenizer } from '../../tokenizer/text-tokenizer.js';
import { generationRequestFor } from '../../worker/job-request.js';
import { loadConfig } from '../../config/load-config.js';
import { createLogger } from '../logger.js';
import { resolveModelArg } from '../../model/model-reference.js';
import { configOption, deviceOption, nonNegativeInt, positiveInt, precisionOption } from '../options.js';

interface GenerateOptions {
  model: string;
  prompt?: string;
  promptsFile?: string;
  maxNewTokens?: number;
  minNewTokens?: number;
  decoding?: 'greedy' | 'beam' | 'sample';
  numBeams?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  batchSize: number;
  deviceLoopMaxBatch?: number;
  device?: string;
  precision?: 'fp32' | 'fp16';
  json?: boolean;
  config?: string;
}

/** CLI flags become defaults for every prompt; a prompts-file line may override them with its own fields. */
function flagDefaults(o: GenerateOptions): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  if (o.maxNewTokens !== undefined) d.max_new_tokens = o.maxNewTokens;
  if (o.minNewTokens !== undefined) d.min_new_tokens = o.minNewTokens;
  if (o.decoding !== undefined) d.decoding = o.decoding;
  if (o.numBeams !== undefined) d.num_beams = o.numBeams;
  if (o.temperature !== undefined) d.temperature = o.temperature;
  if (o.topK !== undefined) d.top_k = o.topK;
  if (o.topP !== undefined) d.top_p = o.topP;
  return d;
}

async function readPrompts(o: GenerateOptions): Promise<JobData[]> {
  const defaults = flagDefaults(o);
  if (o.prompt !== undefined) {
    const parsed = parseJob({ ...defaults, prompt: o.prompt });
    if (!parsed.ok) throw new Error(`--prompt: ${parsed.error}`);
    return [parsed.job];
  }
  const jobs: JobData[] = [];
  const errors: string[] = [];
  for await (const { lineNumber, value } of new JsonlLines(o.promptsFile!)) {
    if (value.ok === false) {
      errors.push(`${o.promptsFile}:${lineNumber}: ${value.error}`);
      continue;
    }
    const raw = value.raw;
    const parsed = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? parseJob({ ...defaults, ...raw }) : parseJob(raw);
    if (parsed.ok) jobs.push(parsed.job);
    else errors.push(`${o.promptsFile}:${lineNumber}: ${parsed.error}`);
  }
  if (errors.length) throw new Error(`refused ${errors.length} line(s), nothing generated:\n${errors.join('\n')}`);
  return jobs;
}

export function registerGenerateCommand(program: Command): void {
  program
    .command('generate')
    .description('generate text for prompts directly (no queue): one graph run per batch')
    .requiredOption('--model <dir|name>', 'HF checkpoint dir (built on first use, then cached), built model dir, or config name')
    .option('--prompt <text>', 'one prompt')
    .option('--prompts-file <file.jsonl>', 'lines of {"prompt": "...", optional job fields}')
    .option('--max-new-tokens <n>', 'tokens to generate per prompt', positiveInt('--max-new-tokens'))
    .option('--min-new-tokens <n>', 'suppress EOS until this many tokens', nonNegativeInt('--min-new-tokens'))
    .addOption(new Option('--decoding <kind>', 'search').choices(['greedy', 'beam', 'sample']))
    .option('--num-beams <n>', 'beams for --decoding beam', positiveInt('--num-beams'))
    .option('--temperature <t>', 'for --decoding sample (default 1)', Number)
    .option('--top-k <k>', 'for --decoding sample: keep the k most likely tokens (0 = all)', nonNegativeInt('--top-k'))
    .option('--top-p <p>', 'for --decoding sample: nucleus mass to keep (1 = all)', Number)
    .option('--batch-size <b>', 'prompts per graph run', positiveInt('--batch-size'), 8)
    .option('--device-loop-max-batch <b>', 'greedy batches up to b use the native device loop (0 = off)', nonNegativeInt('--device-loop-max-batch'))
    .addOption(deviceOption())
    .addOption(precisionOption())
    .option('--json', 'one JSON line per prompt')
    .addOption(configOption())
    .action(async (o: GenerateOptions) => {
      if ((o.prompt === undefined) === (o.promptsFile === undefined)) throw new Error('give exactly one of --prompt or --prompts-file');
      const config = loadConfig({ file: o.config });
      const logger = createLogger(config.logLevel);
      const jobs = await readPrompts(o);
      const model = await resolveModelArg(o.model, config, o.precision);
      if (model.built) logger.info({ dir: model.dir, seconds: model.manifest.buildSeconds }, 'built model');
      const device = parseDevice(o.device ?? config.worker.device);
      const generator = await Generator.open(model.dir, {
        device,
        deviceLoopMaxBatch: o.deviceLoopMaxBatch ?? config.worker.deviceLoopMaxBatch,
        onWarning: (m) => logger.warn(m),
      });
      const tokenizer = TextTokenizer.fromModelDir(model.dir, model.manifest.files);
      try {
        for (let start = 0; start < jobs.length; start += o.batchSize) {
          const chunk = jobs.slice(start, start + o.batchSize);
          const t0 = performance.now();
          const encoded = await tokenizer.encodeJobs(chunk);
          const promptIds = encoded.map((e) => e.ids);
          const tokenizeMs = performance.now() - t0;
          const { results, timings } = await generator.generate(chunk.map((j, i) => generationRequestFor(j, promptIds[i]!)));
          for (const [i, r] of results.entries()) {
            if ('error' in r) {
              if (o.json) process.stdout.write(`${JSON.stringify({ prompt: encoded[i]!.text, error: r.error })}\n`);
              else process.stderr.write(`error for prompt ${start + i + 1}: ${r.error}\n`);
              process.exitCode = 1;
              continue;
            }
            const text = await tokenizer.decode(r.tokenIds);
            if (!o.json) {
              process.stdout.write(`${encoded[i]!.text}${text}\n`);
              continue;
            }
            const line = {
              prompt: encoded[i]!.text,
              promptTokenIds: promptIds[i],
              tokenIds: r.tokenIds,
              text,
              finishReason: r.finishReason,
              timings: {
                tokenizeMs,
                generateMs: timings.generateMs,
                batchSize: timings.batchSize,
                tokensPerSecond: (r.tokenIds.length * 1000) / timings.generateMs,
                device: generator.device,
              },
            };
            process.stdout.write(`${JSON.stringify(line)}\n`);
          }
        }
      } finally {
        await generator.close();
      }
    });
}
