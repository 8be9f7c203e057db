import { join } from 'node:path';
import { Tokenizer } from 'tokenizers';
import { ChatTemplate, ChatTemplateError, type ChatMessage } from './chat-template.js';

/** The files of a built model directory the tokenizer reads (manifest.files). */
export interface TokenizerFiles {
  readonly tokenizer: string;
  readonly tokenizerConfig?: string | undefined;
  readonly chatTemplate?: string | undefined;
}

/**
 * A Hugging Face fast tokenizer loaded from tokenizer.json, with the model's chat template when it has one.
 * Prompts are encoded as HF's tokenizer(prompt) does: the post-processor adds what the model expects (Llama's
 * BOS; GPT-2's adds nothing). A tokenizer.json's `padding` and `truncation` sections are ignored: padding is the
 * engine's job (a padded prompt would feed pad ids as prompt tokens), and a truncated prompt would slip past the
 * context check.
 */
export class TextTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly chatTemplate: ChatTemplate | undefined,
  ) {}

  static fromFile(path: string, chatTemplate?: ChatTemplate): TextTokenizer {
    try {
      const tokenizer = Tokenizer.fromFile(path);
      tokenizer.disablePadding();
      tokenizer.disableTruncation();
      return new TextTokenizer(tokenizer, chatTemplate);
    } catch (e) {
      throw new Error(`cannot load tokenizer ${path}: ${(e as Error).message}`);
    }
  }

  /** A built model directory's tokenizer and chat template. */
  static fromModelDir(dir: string, files: TokenizerFiles): TextTokenizer {
    const at = (f: string | undefined): string | undefined => (f === undefined ? undefined : join(dir, f));
    return TextTokenizer.fromFile(join(dir, files.tokenizer), ChatTemplate.load({ tokenizerConfig: at(files.tokenizerConfig), chatTemplate: at(files.chatTemplate) }));
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplate !== undefined;
  }

  async encode(text: string): Promise<number[]> {
    const encoding = await this.tokenizer.encode(text, null, { addSpecialTokens: true });
    return encoding.getIds();
  }

  async encodeBatch(texts: readonly string[]): Promise<number[][]> {
    if (texts.length === 0) return [];
    const encodings = await this.tokenizer.encodeBatch([...texts], { addSpecialTokens: true });
    return encodings.map((e) => e.getIds());
  }

  /**
   * A job's prompt ids and the text they came from: a prompt as encode() gives it, messages rendered with the
   * chat template (encodeChat). Prompts of a batch are encoded together.
   */
  async encodeJobs(jobs: readonly { prompt?: string | undefined; messages?: readonly ChatMessage[] | undefined }[]): Promise<{ text: string; ids: number[] }[]> {
    const prompts = jobs.flatMap((j) => (j.messages ? [] : [j.prompt ?? '']));
    const promptIds = await this.encodeBatch(prompts);
    let next = 0;
    const out: { text: string; ids: number[] }[] = [];
    for (const j of jobs) out.push(j.messages ? await this.encodeChat(j.messages) : { text: prompts[next]!, ids: promptIds[next++]! });
    return out;
  }

  /** The conversation rendered with the chat template (add_generation_prompt), as text. */
  renderChat(messages: readonly ChatMessage[]): string {
    if (!this.chatTemplate) throw new ChatTemplateError('messages: this model has no chat template (tokenizer_config.json chat_template or chat_template.jinja); send a prompt instead');
    return this.chatTemplate.render(messages);
  }

  /**
   * A rendered conversation's ids, as HF's apply_chat_template(tokenize=True) gives them: the template writes
   * the special tokens itself, so the post-processor adds none.
   */
  async encodeChat(messages: readonly ChatMessage[]): Promise<{ text: string; ids: number[] }> {
    const text = this.renderChat(messages);
    const encoding = await this.tokenizer.encode(text, null, { addSpecialTokens: false });
    return { text, ids: encoding.getIds() };
  }

  /** Byte-level decode; special tokens kept so that the text is exactly what the ids say. */
  async decode(ids: readonly number[]): Promise<string> {
    return this.tokenizer.decode([...ids], false);
  }

  async decodeBatch(ids: readonly (readonly number[])[]): Promise<string[]> {
    if (ids.length === 0) return [];
    return this.tokenizer.decodeBatch(ids.map((x) => [...x]), false);
  }

  get vocabSize(): number {
    return this.tokenizer.getVocabSize(true);
  }
}
