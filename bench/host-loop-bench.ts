import * as ort from 'onnxruntime-node';
import { type DeviceSpec, executionProviders } from '../src/engine/execution-provider.js';
import type { DecoderSpec } from '../src/model/architectures/architecture.js';
import type { BaselineName } from './bench-models.js';
import { type BenchShape, promptOf } from './bench-types.js';

/**
 * The write-up's baselines: a decode loop in JavaScript, one run() per token, so whatever the graph returns
 * crosses to the host every step. Each returns the generated ids of row 0 (to check against the in-graph run).
 */
export class HostLoopBench {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly kind: BaselineName,
    private readonly spec: DecoderSpec,
  ) {}

  static async open(path: string, kind: BaselineName, spec: DecoderSpec, device: DeviceSpec): Promise<HostLoopBench> {
    const session = await ort.InferenceSession.create(path, { executionProviders: executionProviders(device), graphOptimizationLevel: 'all' });
    return new HostLoopBench(session, kind, spec);
  }

  async generate(batch: number, shape: BenchShape): Promise<number[]> {
    const prompt = promptOf(shape.promptTokens);
    const rows: number[][] = Array.from({ length: batch }, () => [...prompt]);
    const steps = shape.totalTokens - shape.promptTokens;
    const { numLayers, numKvHeads, headSize, vocabSize, precision } = this.spec;
    const floatType = precision === 'fp16' ? 'float16' : 'float32';
    // Without a cache every step starts from an empty past and recomputes the whole sequence.
    const empty = (): ort.Tensor[] =>
      Array.from({ length: numLayers }, () => new ort.Tensor(floatType, floatType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [2, batch, numKvHeads, 0, headSize]));
    let past = empty();
    for (let step = 0; step < steps; step++) {
      const len = rows[0]!.length;
      const feedLen = this.kind === 'hostKv' && step > 0 ? 1 : len;
      const ids = new Int32Array(batch * feedLen);
      rows.forEach((r, b) => ids.set(r.slice(len - feedLen), b * feedLen));
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int32', ids, [batch, feedLen]),
        attention_mask: new ort.Tensor('int32', new Int32Array(batch * len).fill(1), [batch, len]),
      };
      // position_ids is part of the search ops' contract; the graph takes positions from the mask.
      feeds.position_ids = new ort.Tensor('int32', new Int32Array(batch * feedLen), [batch, feedLen]);
      past.forEach((p, i) => (feeds[`past_${i}`] = p));
      const out = await this.session.run(feeds);
      if (this.kind === 'argmaxNoCache') {
        const next = out.next_token!.data as BigInt64Array;
        rows.forEach((r, b) => r.push(Number(next[b])));
        continue;
      }
      const logits = out.logits!.data as Float32Array;
      const positions = Number(out.logits!.dims[1]);
      rows.forEach((r, b) => {
        const base = (b * positions + positions - 1) * vocabSize;
        let best = 0;
        for (let v = 1; v < vocabSize; v++) if (logits[base + v]! > logits[base + best]!) best = v;
        r.push(best);
      });
      past = this.kind === 'hostKv' ? Array.from({ length: numLayers }, (_, i) => out[`present_${i}`]!) : empty();
    }
    return rows[0]!.slice(shape.promptTokens);
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
