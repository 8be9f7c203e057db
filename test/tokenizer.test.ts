import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { GPT2_TOKENIZER_JSON } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';

describe('GPT-2 byte-level BPE tokenizer (tokenizer.json shipped in assets/)', () => {
  const tok = TextTokenizer.fromFile(GPT2_TOKENIZER_JSON);

  it('encodes the reference sentence to the reference ids', async () => {
    assert.deepEqual(await tok.encode('Here is some text to encode Hello World'), [4342, 318, 617, 2420, 284, 37773, 18435, 2159]);
  });

  it('round-trips any text through byte-level decoding, including non-ASCII and emoji', async () => {
    for (const text of ['Ça va? 日本語 🚀', '  leading spaces\nand\ttabs', 'a<|endoftext|>b']) {
      assert.equal(await tok.decode(await tok.encode(text)), text);
    }
  });

  it('encodes <|endoftext|> in a prompt as the special token 50256, as HF does', async () => {
    assert.deepEqual(await tok.encode('<|endoftext|>'), [50256]);
  });

  it('batches encode and decode consistently with single calls', async () => {
    const texts = ['Hello world', 'Once upon a time'];
    const ids = await tok.encodeBatch(texts);
    assert.deepEqual(ids, [await tok.encode(texts[0]!), await tok.encode(texts[1]!)]);
    assert.deepEqual(await tok.decodeBatch(ids), texts);
  });
});

describe('a tokenizer.json with padding and truncation sections', () => {
  const dir = mkdtempSync(join(tmpdir(), 'genqueue-tok-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const json = JSON.parse(readFileSync(GPT2_TOKENIZER_JSON, 'utf8')) as Record<string, unknown>;
  json['padding'] = {
    strategy: { Fixed: 16 },
    direction: 'Right',
    pad_to_multiple_of: null,
    pad_id: 50256,
    pad_type_id: 0,
    pad_token: '<|endoftext|>',
  };
  json['truncation'] = { direction: 'Right', max_length: 4, strategy: 'LongestFirst', stride: 0 };
  const path = join(dir, 'tokenizer.json');
  writeFileSync(path, JSON.stringify(json));
  const plain = TextTokenizer.fromFile(GPT2_TOKENIZER_JSON);
  const padded = TextTokenizer.fromFile(path);
  const texts = ['Here is some text to encode Hello World', 'Hi', 'Once upon a time there was a tokenizer'];

  it('encodes prompts exactly as without them (no pad ids, nothing cut)', async () => {
    for (const text of texts) assert.deepEqual(await padded.encode(text), await plain.encode(text));
  });

  it('encodes batches exactly as without them', async () => {
    assert.deepEqual(await padded.encodeBatch(texts), await plain.encodeBatch(texts));
  });
});
