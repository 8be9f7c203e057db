import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type FloatTensor } from '../../src/model/checkpoint/safetensors.js';
import { writeRandomGpt2Checkpoint, DEMO_SHAPE } from '../../src/model/checkpoint/random-gpt2-checkpoint.js';

export const EOS = 50256;

/**
 * A random GPT-2 whose final LayerNorm bias points along EOS's (tied) embedding, so EOS wins every step:
 * generation stops at once unless min_new_tokens holds it back. Exercises the "stop" path deterministically.
 */
export function writeEosCheckpoint(dir: string): void {
  writeRandomGpt2Checkpoint(dir, { ...DEMO_SHAPE, layers: 1, embd: 64, heads: 2, positions: 64 });
  const path = join(dir, 'model.safetensors');
  const file = SafetensorsFile.open(path);
  const tensors = new Map<string, FloatTensor>();
  for (const name of file.names()) tensors.set(name, file.readFloat(name));
  const wte = tensors.get('transformer.wte.weight')!;
  const D = wte.shape[1]!;
  const eosRow = wte.data.subarray(EOS * D, (EOS + 1) * D);
  const bias = new Float32Array(D);
  for (let i = 0; i < D; i++) bias[i] = 50 * eosRow[i]!;
  tensors.set('transformer.ln_f.bias', { shape: [D], data: bias });
  writeSafetensors(path, tensors);
}
