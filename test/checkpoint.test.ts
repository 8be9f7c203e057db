import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openHfCheckpoint } from '../src/model/checkpoint/hf-checkpoint.js';
import { SafetensorsFile, writeSafetensors, type FloatTensor } from '../src/model/checkpoint/safetensors.js';
import { buildModel } from '../src/model/model-builder.js';
import { WeightFile } from '../src/model/onnx/weight-file.js';
import { fixtureCheckpoint, fixturePath } from './harness/fixtures.js';

const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('checkpoint weights: dtypes, shards, streaming', () => {
  const made: string[] = [];
  const tmp = (prefix: string): string => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    made.push(d);
    return d;
  };
  after(() => {
    for (const d of made) rmSync(d, { recursive: true, force: true });
  });

  it('reads bf16 and fp16 tensors in pieces that join to the whole tensor', () => {
    for (const [fixture, dtype] of [['llama31-tiny', 'BF16'], ['qwen2-tiny', 'F16']] as const) {
      const file = SafetensorsFile.open(join(fixturePath(fixture), 'model.safetensors'));
      const name = 'model.embed_tokens.weight';
      assert.equal(file.entry(name).dtype, dtype);
      const whole = file.readFloat(name).data;
      const pieces: Float32Array[] = [];
      file.forEachFloatChunk(name, 100_003, (v) => pieces.push(v.slice()));
      assert.ok(pieces.length > 1);
      const joined = new Float32Array(whole.length);
      let at = 0;
      for (const p of pieces) {
        joined.set(p, at);
        at += p.length;
      }
      assert.deepEqual(joined, whole);
    }
  });

  it('a sharded checkpoint (index + two files) builds the same weights as the single file', () => {
    const single = fixturePath('mistral-tiny');
    const sharded = join(tmp('genqueue-shards-'), 'mistral-tiny');
    cpSync(single, sharded, { recursive: true });
    rmSync(join(sharded, 'model.safetensors'));
    const file = SafetensorsFile.open(join(single, 'model.safetensors'));
    const names = file.names();
    const shards: [string, Map<string, FloatTensor>][] = [
      ['model-00001-of-00002.safetensors', new Map()],
      ['model-00002-of-00002.safetensors', new Map()],
    ];
    const weightMap: Record<string, string> = {};
    names.forEach((n, i) => {
      const [shardName, tensors] = shards[i % 2]!;
      tensors.set(n, file.readFloat(n));
      weightMap[n] = shardName;
    });
    for (const [shardName, tensors] of shards) writeSafetensors(join(sharded, shardName), tensors);
    writeFileSync(join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const [a, b] = [tmp('genqueue-single-'), tmp('genqueue-sharded-')];
    buildModel(single, a, { precision: 'fp16' });
    buildModel(sharded, b, { precision: 'fp16' });
    assert.equal(sha(join(b, 'decoder.onnx.data')), sha(join(a, 'decoder.onnx.data')));
    assert.equal(sha(join(b, 'greedy.onnx')), sha(join(a, 'greedy.onnx')));
  });

  it('weights stream to the file piece by piece with offsets as decimal strings (files beyond 2 GB)', () => {
    const dir = tmp('genqueue-weights-');
    const w = new WeightFile(join(dir, 'w.data'));
    try {
      w.tensor('small', 'float32', [4], new Uint8Array(16));
      const proto = w.streamedTensor('big', 'float16', [3, 1000], (write) => {
        for (let i = 0; i < 3; i++) write(new Uint8Array(2000).fill(i + 1));
      });
      const offset = proto.externalData?.find((e) => e.key === 'offset')?.value;
      assert.equal(offset, '0');
      assert.equal(proto.externalData?.find((e) => e.key === 'length')?.value, '6000');
      assert.throws(() => w.streamedTensor('short', 'float32', [1000], (write) => write(new Uint8Array(8))), /8 bytes produced, 4000 expected/);
    } finally {
      w.close();
    }
    const bytes = readFileSync(join(dir, 'w.data'));
    assert.deepEqual([bytes[0], bytes[1999], bytes[2000], bytes[5999]], [1, 1, 2, 3]);
  });

  it('every dtype of the fixtures opens (bf16 Llama 3.1, fp16 Qwen2, fp32 Mistral)', () => {
    for (const f of ['llama31-tiny', 'qwen2-tiny', 'mistral-tiny']) assert.ok(openHfCheckpoint(fixtureCheckpoint(f)).tensors.names().length > 0);
  });
});
