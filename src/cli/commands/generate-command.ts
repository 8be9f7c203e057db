import { Option, type Command } from 'commander';
import { Generator } from '../../engine/generator.js';
import { parseDevice } from '../../engine/execution-provider.js';
import type { GenerationResult } from '../../engine/generation-types.js';
import { SlotEngine } from '../../engine/slot-engine.js';
import { SlotRequestError } from '../../engine/slot-errors.js';
import { type JobData, parseJob } from '../../queue/job-schema.js';
import { JsonlLines } from '../../queue/jsonl-lines.js';
import { TextTokenizer } from '../../tokenizer/text-tokenizer.js';
import { type EngineSetting, chooseEngine, slotEngineOptions } from '../../worker/engine-choice.js';
import { generationRequestFor, runsOnSlots, seedForResult } from '../../worker/job-request.js';
import { SlotScheduler, slotRefusal } from '../../worker/slot-scheduler.js';
import { StopSequences, applyStops } from '../../worker/stop-sequences.js';
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
  seed?: string;
  stop?: string[];
  engine?: EngineSetting;
  slots?: number;
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
  // The job field's rules apply (0 .. 2^63 - 1): a number where it is exact, the decimal string beyond.
  if (o.seed !== undefined) d.seed = /^\d{1,15}$/.test(o.seed) ? Number(o.seed) : o.seed;
  if (o.stop !== undefined) d.stop = o.stop;
  return d;
}

/** One prompt's outcome, printed in input order. */
type Outcome =
  | { readonly error: string }
  | {
      readonly result: GenerationResult;
      readonly text: string;
      readonly seed?: bigint;
      readonly timings: { tokenizeMs: number; generateMs: number; batchSize: number; timeToFirstTokenMs?: number };
    };

/** Prints outcomes in input order as soon as every earlier one is printed. */
class OrderedPrinter {
  private readonly ready = new Map<number, Outcome>();
  private next = 0;

  constructor(
    private readonly prompts: readonly { text: string; ids: number[] }[],
    private readonly json: boolean,
    private readonly device: () => string,
  ) {}

  put(i: number, outcome: Outcome): void {
    this.ready.set(i, outcome);
    for (let o = this.ready.get(this.next); o !== undefined; o = this.ready.get(this.next)) {
      this.ready.delete(this.next);
      this.print(this.next++, o);
    }
  }

  private print(i: number, o: Outcome): void {
    const { text: prompt, ids } = this.prompts[i]!;
    if ('error' in o) {
      if (this.json) process.stdout.write(`${JSON.stringify({ prompt, error: o.error })}\n`);
      else process.stderr.write(`error for prompt ${i + 1}: ${o.error}\n`);
      process.exitCode = 1;
      return;
    }
    if (!this.json) {
      process.stdout.write(`${prompt}${o.text}\n`);
      return;
    }
    const { tokenizeMs, generateMs, batchSize, timeToFirstTokenMs } = o.timings;
    const line = {
      prompt,
      promptTokenIds: ids,
      tokenIds: o.result.tokenIds,
      text: o.text,
      finishReason: o.result.finishReason,
      ...(o.seed === undefined ? {} : { seed: seedForResult(o.seed) }),
      timings: {
        tokenizeMs,
        generateMs,
        batchSize,
        tokensPerSecond: generateMs > 0 ? (o.result.tokenIds.length * 1000) / generateMs : 0,
        ...(timeToFirstTokenMs === undefined ? {} : { timeToFirstTokenMs }),
        device: this.device(),
      },
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
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
    .description('generate text for prompts directly (no queue): on the slot engine (continuous batching) or in batches, as the worker would')
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
    .option('--seed <s>', 'for --decoding sample: 0 .. 2^63 - 1; the same seed gives the same tokens (slot engine)')
    .option('--stop <text...>', 'stop strings: the text ends before the first one that appears')
    .addOption(new Option('--engine <kind>', 'slots (continuous batching), batches, or auto (default: config worker.engine)').choices(['auto', 'slots', 'batches']))
    .option('--slots <s>', 'rows of the continuous batch (default: config worker.slots, else 256 on CUDA, 8 on the CPU)', positiveInt('--slots'))
    .option('--batch-size <b>', 'prompts per graph run (batches; with slots: per beam batch)', positiveInt('--batch-size'), 8)
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
      const model = await resolveModelArg(o.model, config, o.precision, undefined, o.device);
      if (model.built) logger.info({ dir: model.dir, seconds: model.manifest.buildSeconds }, 'built model');
      const device = parseDevice(o.device ?? config.worker.device);
      const choice = chooseEngine(o.engine ?? config.worker.engine, model.manifest, device);
      const seeded = jobs.some((j) => j.seed !== undefined && j.decoding === 'sample');
      if (choice.kind === 'batches' && seeded) {
        throw new Error(`a seed needs the slot engine (--engine slots): ${choice.reason ?? 'engine batches was chosen'}`);
      }
      const tokenizer = TextTokenizer.fromModelDir(model.dir, model.manifest.files);
      const t0 = performance.now();
      const encoded = await tokenizer.encodeJobs(jobs);
      const tokenizeMs = performance.now() - t0;
      let slotEngine: SlotEngine | undefined;
      let searchOps: Generator | undefined;
      const printer = new OrderedPrinter(encoded, Boolean(o.json), () => slotEngine?.device ?? searchOps?.device ?? '');
      const openSearchOps = async (): Promise<Generator> =>
        (searchOps ??= await Generator.open(model.dir, {
          device,
          deviceLoopMaxBatch: o.deviceLoopMaxBatch ?? config.worker.deviceLoopMaxBatch,
          onWarning: (m) => logger.warn(m),
        }));
      try {
        let onSearchOps = jobs.map((_, i) => i);
        if (choice.kind === 'slots') {
          // In this thread: the command has nothing else to do while a chunk runs.
          slotEngine = SlotEngine.open(model.dir, slotEngineOptions(config.worker, model.manifest, device, o.slots, (m) => logger.warn(m)));
          onSearchOps = onSearchOps.filter((i) => !runsOnSlots(jobs[i]!));
          const scheduler = new SlotScheduler({
            engine: slotEngine,
            tokenizer,
            streamEveryTokens: Number.MAX_SAFE_INTEGER,
            cancelled: async (refs) => refs.map(() => false),
            onWarning: (m) => logger.warn(m),
          });
          const batchSize = slotEngine.limits.slots;
          // Every job is submitted at once: the engine runs as many as it has slots and starts the next as rows end.
          const slotted = jobs.flatMap((job, i) =>
            runsOnSlots(job)
              ? [
                  scheduler.run({ ref: { id: String(i), queue: 'generate' }, data: job, promptTokenIds: encoded[i]!.ids }).then(
                    (r) => {
                      if (r.finishReason === 'cancelled') throw new Error('cancelled');
                      const t = r.timings;
                      printer.put(i, {
                        result: { tokenIds: r.tokenIds, finishReason: r.finishReason },
                        text: r.text,
                        ...(r.seed === undefined ? {} : { seed: r.seed }),
                        timings: { tokenizeMs, generateMs: t.totalMs - t.queueMs, batchSize, ...(t.timeToFirstTokenMs === undefined ? {} : { timeToFirstTokenMs: t.timeToFirstTokenMs }) },
                      });
                    },
                    (e: unknown) => printer.put(i, { error: e instanceof SlotRequestError ? slotRefusal(e, model.manifest.spec.contextLength) : (e as Error).message }),
                  ),
                ]
              : [],
          );
          await Promise.all(slotted);
        }
        for (let start = 0; start < onSearchOps.length; start += o.batchSize) {
          const chunk = onSearchOps.slice(start, start + o.batchSize);
          const generator = await openSearchOps();
          const { results, timings } = await generator.generate(chunk.map((i) => generationRequestFor(jobs[i]!, encoded[i]!.ids)));
          for (const [k, r] of results.entries()) {
            const i = chunk[k]!;
            if ('error' in r) {
              printer.put(i, { error: r.error });
              continue;
            }
            const job = jobs[i]!;
            const text = await tokenizer.decode(r.tokenIds);
            // The search ops know nothing of stop strings: the text is cut at the first one here.
            const cut = job.stop?.length ? await applyStops(tokenizer, new StopSequences(job.stop), { tokenIds: r.tokenIds, text }, job.min_new_tokens) : undefined;
            printer.put(i, {
              result: cut ? { tokenIds: cut.tokenIds, finishReason: cut.stopped ? 'stop' : r.finishReason } : r,
              text: cut?.text ?? text,
              timings: { tokenizeMs, generateMs: timings.generateMs, batchSize: timings.batchSize },
            });
          }
        }
      } finally {
        await Promise.allSettled([searchOps?.close(), slotEngine?.close()]);
      }
    });
}

