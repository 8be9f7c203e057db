import { Option } from 'commander';
import type { GenqueueConfig } from '../config/config-schema.js';
import { jobModelName } from '../model/model-reference.js';
import { type FileFormat, type OpenAiMappingOptions, detectFileFormat, writtenCustomIds } from '../queue/openai-batch.js';
import { type Output, openOutput } from './result-lines.js';

/** What `enqueue` and `results` share to read and write OpenAI Batch files. */
export interface FormatOptions {
  format: 'auto' | FileFormat;
  model?: string;
  errorsOut?: string;
  out?: string;
}

export function formatOption(what: string): Option {
  return new Option('--format <format>', `${what} (auto: an OpenAI Batch file when its first line is an OpenAI request, or the ids of one)`)
    .choices(['auto', 'genqueue', 'openai'])
    .default('auto');
}

export function openAiModelOption(): Option {
  return new Option('--model <name>', "OpenAI Batch files: every request's model (a config name, hub id or directory, as worker --model takes), instead of body.model");
}

export function errorsOutOption(): Option {
  return new Option('--errors-out <errors.jsonl>', 'OpenAI Batch files: where error lines go (default: with the output lines in --out)');
}

/** The file's format: as asked, or by its first line; OpenAI-only flags on a genqueue file are an error. */
export async function resolveFormat(file: string, o: FormatOptions): Promise<FileFormat> {
  const format = o.format === 'auto' ? await detectFileFormat(file) : o.format;
  if (format === 'genqueue') {
    const flag = o.model !== undefined ? '--model' : o.errorsOut !== undefined ? '--errors-out' : undefined;
    if (flag) throw new Error(`${flag} is for OpenAI Batch files, and ${file} is read as genqueue job lines (--format openai reads it as OpenAI requests)`);
  }
  return format;
}

/**
 * How request bodies name models: `--model` (resolved as a worker resolves its --model, so both name the same
 * queue), else body.model through the config's registry and hub ids (`meta-llama/Llama-3.2-1B` → `Llama-3.2-1B`).
 */
export function openAiMapping(config: GenqueueConfig, model: string | undefined): OpenAiMappingOptions {
  return {
    ...(model !== undefined ? { model: jobModelName(model, config) } : {}),
    modelName: (bodyModel) => jobModelName(bodyModel, config),
  };
}

/** The output files of an OpenAI Batch run, appended to, and the custom_ids they already hold (not written again). */
export interface OpenAiOutputs {
  readonly out: Output;
  readonly errors?: Output;
  readonly written: Set<string>;
  close(): Promise<void>;
}

export async function openOpenAiOutputs(o: FormatOptions): Promise<OpenAiOutputs> {
  const written = await writtenCustomIds([o.out, o.errorsOut].filter((p): p is string => p !== undefined));
  const out = await openOutput(o.out, { append: true });
  let errors: Output | undefined;
  try {
    errors = o.errorsOut !== undefined ? await openOutput(o.errorsOut, { append: true }) : undefined;
  } catch (e) {
    await out.close();
    throw e;
  }
  return {
    out,
    errors,
    written,
    close: async () => {
      const closed = await Promise.allSettled([out.close(), errors?.close()]);
      const failed = closed.find((c) => c.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
}
