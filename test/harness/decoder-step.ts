import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { openHfCheckpoint } from '../../src/model/checkpoint/hf-checkpoint.js';
import { buildDecoderGraph } from '../../src/model/model-builder.js';
import { encodeModel } from '../../src/model/onnx/graph-builder.js';
import { WeightFile } from '../../src/model/onnx/weight-file.js';

/**
 * The last-position logits of each prompt from a checkpoint's search decoder step alone (fp32, CPU), run once per
 * prompt with an empty past: what HF's model(ids).logits[0, -1] is compared with.
 */
export async function lastPositionLogits(checkpointDir: string, prompts: readonly (readonly number[])[]): Promise<Float32Array[]> {
  const dir = mkdtempSync(join(tmpdir(), 'genqueue-step-'));
  try {
    const weights = new WeightFile(join(dir, 'step.onnx.data'));
    let decoder;
    try {
      decoder = buildDecoderGraph(openHfCheckpoint(checkpointDir), { precision: 'fp32', weights });
    } finally {
      weights.close();
    }
    writeFileSync(join(dir, 'step.onnx'), encodeModel(decoder.graph, 'test'));
    const session = await ort.InferenceSession.create(join(dir, 'step.onnx'));
    try {
      const { numLayers, numKvHeads, headSize } = decoder.spec;
      const out: Float32Array[] = [];
      for (const ids of prompts) {
        const S = ids.length;
        const feeds: Record<string, ort.Tensor> = {
          input_ids: new ort.Tensor('int32', Int32Array.from(ids), [1, S]),
          position_ids: new ort.Tensor('int32', Int32Array.from(ids.map((_, i) => i)), [1, S]),
          attention_mask: new ort.Tensor('int32', new Int32Array(S).fill(1), [1, S]),
        };
        for (let l = 0; l < numLayers; l++) feeds[`past_${l}`] = new ort.Tensor('float32', new Float32Array(0), [2, 1, numKvHeads, 0, headSize]);
        out.push((await session.run(feeds)).logits!.data as Float32Array);
      }
      return out;
    } finally {
      await session.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
