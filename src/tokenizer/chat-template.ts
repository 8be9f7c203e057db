import { existsSync, readFileSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { z } from 'zod';

/** One message of a chat job. */
export const ChatMessage = z.object({ role: z.string().min(1), content: z.string() }).strict();
export type ChatMessage = z.infer<typeof ChatMessage>;

/** A chat job for a model without a chat template, or a template that fails on the messages. */
export class ChatTemplateError extends Error {
  override readonly name = 'ChatTemplateError';
}

/** A special token as tokenizer_config.json writes it: a string or an added-token object. */
const SpecialToken = z.union([z.string(), z.object({ content: z.string() }).passthrough(), z.null()]).optional();
const TokenizerConfig = z
  .object({
    chat_template: z.union([z.string(), z.array(z.object({ name: z.string(), template: z.string() }))]).nullable().optional(),
    bos_token: SpecialToken,
    eos_token: SpecialToken,
    unk_token: SpecialToken,
    pad_token: SpecialToken,
  })
  .passthrough();

const tokenText = (t: z.infer<typeof SpecialToken>): string | undefined => (t === null || t === undefined ? undefined : typeof t === 'string' ? t : t.content);

/**
 * A model's chat template (tokenizer_config.json's chat_template, or chat_template.jinja beside it as
 * transformers 5 saves it), rendered with @huggingface/jinja as HF's apply_chat_template does: the messages,
 * add_generation_prompt, and the special tokens of tokenizer_config.json.
 */
export class ChatTemplate {
  private constructor(
    private readonly template: Template,
    private readonly specialTokens: Record<string, string>,
  ) {}

  /** The template of a model directory's files, or undefined when it has none. */
  static load(files: { tokenizerConfig?: string | undefined; chatTemplate?: string | undefined }): ChatTemplate | undefined {
    const config = files.tokenizerConfig && existsSync(files.tokenizerConfig) ? TokenizerConfig.parse(JSON.parse(readFileSync(files.tokenizerConfig, 'utf8'))) : undefined;
    let source: string | undefined;
    const configured = config?.chat_template;
    if (typeof configured === 'string') source = configured;
    else if (Array.isArray(configured)) source = (configured.find((t) => t.name === 'default') ?? configured[0])?.template;
    if (source === undefined && files.chatTemplate && existsSync(files.chatTemplate)) source = readFileSync(files.chatTemplate, 'utf8');
    if (source === undefined) return undefined;
    const specialTokens: Record<string, string> = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const) {
      const text = tokenText(config?.[key]);
      if (text !== undefined) specialTokens[key] = text;
    }
    try {
      return new ChatTemplate(new Template(source), specialTokens);
    } catch (e) {
      throw new ChatTemplateError(`the model's chat template does not parse: ${(e as Error).message}`);
    }
  }

  /** The text the model continues from: the conversation and the assistant's turn opened. */
  render(messages: readonly ChatMessage[]): string {
    try {
      return this.template.render({ ...this.specialTokens, messages, add_generation_prompt: true });
    } catch (e) {
      throw new ChatTemplateError(`chat template failed on these messages: ${(e as Error).message}`);
    }
  }
}
