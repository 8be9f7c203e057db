import { readFileSync } from 'node:fs';
import onnxProto from 'onnx-proto';

/** A model file's operator counts by domain.type, and its opset domains. */
export function onnxCensus(file: string): { ops: Record<string, number>; domains: string[]; nodes: onnxProto.onnx.INodeProto[] } {
  const m = onnxProto.onnx.ModelProto.decode(readFileSync(file));
  const ops: Record<string, number> = {};
  for (const n of m.graph?.node ?? []) ops[`${n.domain ?? ''}.${n.opType}`] = (ops[`${n.domain ?? ''}.${n.opType}`] ?? 0) + 1;
  return { ops, domains: (m.opsetImport ?? []).map((o) => o.domain ?? ''), nodes: m.graph?.node ?? [] };
}
