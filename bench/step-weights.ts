import { readFileSync } from 'node:fs';
import onnxProto from 'onnx-proto';

/**
 * Bytes of the projection weights one small-batch device-loop step reads: every genqueue.SmallBatchMatMul's B,
 * each once. A batch-1 step streams at least these, so bytes / step time is the bandwidth its kernels reach.
 */
export function smallBatchWeightBytes(stepFile: string): number {
  const graph = onnxProto.onnx.ModelProto.decode(readFileSync(stepFile)).graph;
  const bytesPerElement: Record<number, number> = { [onnxProto.onnx.TensorProto.DataType.FLOAT16]: 2, [onnxProto.onnx.TensorProto.DataType.FLOAT]: 4 };
  const sizes = new Map((graph?.initializer ?? []).map((t) => [t.name ?? '', (t.dims ?? []).reduce((a, d) => a * Number(d), 1) * (bytesPerElement[t.dataType ?? 0] ?? 0)]));
  const weights = new Set((graph?.node ?? []).filter((n) => n.domain === 'genqueue' && n.opType === 'SmallBatchMatMul').map((n) => n.input?.[1] ?? ''));
  return [...weights].reduce((sum, name) => sum + (sizes.get(name) ?? 0), 0);
}
