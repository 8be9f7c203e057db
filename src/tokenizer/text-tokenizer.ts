import { Tokenizer } from 'tokenizers';

/**
 * A Hugging Face fast tokenizer loaded from tokenizer.json (byte-level BPE for GPT-2).
 * Prompts are encoded without special tokens added: GPT-2 uses none, and HF's generate sees the same ids.
 * A tokenizer.json's `padding` and `truncation` sections are ignored: padding is the engine's job (a padded
 * prompt would feed pad ids as prompt tokens), and a truncated prompt would slip past the context check.
 */
export class TextTokenizer {
  private constructor(private readonly tokenizer: Tokenizer) {}

  static fromFile(path: string): TextTokenizer {
    try {
      const tokenizer = Tokenizer.fromFile(path);
      tokenizer.disablePadding();
      tokenizer.disableTruncation();
      return new TextTokenizer(tokenizer);
    } catch (e) {
      throw new Error(`cannot load tokenizer ${path}: ${(e as Error).message}`);
    }
  }

  async encode(text: string): Promise<number[]> {
    const encoding = await this.tokenizer.encode(text, null, { addSpecialTokens: false });
    return encoding.getIds();
  }

  async encodeBatch(texts: readonly string[]): Promise<number[][]> {
    if (texts.length === 0) return [];
    const encodings = await this.tokenizer.encodeBatch([...texts], { addSpecialTokens: false });
    return encodings.map((e) => e.getIds());
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
