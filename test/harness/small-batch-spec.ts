import onnxProto from 'onnx-proto';

type IGraphProto = onnxProto.onnx.IGraphProto;
type INodeProto = onnxProto.onnx.INodeProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;
const T = onnxProto.onnx.AttributeProto.AttributeType;

const int = (name: string, i: number): IAttributeProto => ({ name, type: T.INT, i });
const float = (name: string, f: number): IAttributeProto => ({ name, type: T.FLOAT, f });

function attribute(node: INodeProto, name: string): number | undefined {
  const a = node.attribute?.find((x) => x.name === name);
  if (!a) return undefined;
  return a.type === T.FLOAT ? (a.f ?? 0) : Number(a.i ?? 0);
}

/**
 * genqueue.SmallBatchMatMul (native/small-batch-matmul.h) spelled with the standard and com.microsoft operators it
 * folds: the normalization, a MatMul against B [out, in] (FusedMatMul transB), + bias, SwiGLU or FastGelu,
 * + residual. An executable statement of the operator that ONNX Runtime runs on any provider, so a small-batch
 * step's wiring can be checked on the CPU.
 */
function standardOperators(node: INodeProto, initializers: readonly onnxProto.onnx.ITensorProto[]): INodeProto[] {
  const [a, b, bias, residual, gamma, beta] = [...(node.input ?? []), '', '', '', ''];
  const out = node.output![0]!;
  const nodes: INodeProto[] = [];
  let value = a!;
  const add = (opType: string, inputs: string[], attrs: IAttributeProto[] = [], domain = ''): string => {
    const output = `${out}_spec${nodes.length}`;
    nodes.push({ name: `${node.name}_spec${nodes.length}`, opType, domain, input: inputs, output: [output], attribute: attrs });
    return output;
  };
  const epsilon = attribute(node, 'epsilon') ?? 1e-5;
  if (gamma) {
    value =
      attribute(node, 'rms_norm') === 1
        ? add('SimplifiedLayerNormalization', [value, gamma], [float('epsilon', epsilon), int('axis', -1)])
        : add('LayerNormalization', [value, gamma, beta!], [float('epsilon', epsilon), int('axis', -1)]);
  }
  value = add('FusedMatMul', [value, b!], [int('transB', 1), float('alpha', 1)], 'com.microsoft');
  if (bias) value = add('Add', [value, bias]);
  if (attribute(node, 'swiglu') === 1) {
    const rows = Number(initializers.find((t) => t.name === b)?.dims?.[0]);
    if (!Number.isInteger(rows)) throw new Error(`SmallBatchMatMul ${node.name}: B is not an initializer`);
    const sizes = `${out}_spec_split`;
    nodes.push({ name: `${node.name}_spec_sizes`, opType: 'Constant', domain: '', input: [], output: [sizes], attribute: [{ name: 'value', type: T.TENSOR, t: { dataType: onnxProto.onnx.TensorProto.DataType.INT64, dims: [2], int64Data: [rows / 2, rows / 2] } }] });
    const gate = `${out}_spec_gate`;
    const up = `${out}_spec_up`;
    nodes.push({ name: `${node.name}_spec_split`, opType: 'Split', domain: '', input: [value, sizes], output: [gate, up], attribute: [int('axis', -1)] });
    value = add('Mul', [add('Mul', [gate, add('Sigmoid', [gate])]), up]);
  }
  if (attribute(node, 'fast_gelu') === 1) value = add('FastGelu', [value], [], 'com.microsoft');
  if (residual) value = add('Add', [value, residual]);
  nodes.push({ name: `${node.name}_spec_out`, opType: 'Identity', domain: '', input: [value], output: [out], attribute: [] });
  return nodes;
}

/** The graph with every SmallBatchMatMul replaced by standardOperators (fp32 graphs: the CPU provider's kernels). */
export function withStandardOperators(graph: IGraphProto): IGraphProto {
  const initializers = graph.initializer ?? [];
  const node = (graph.node ?? []).flatMap((n) => (n.domain === 'genqueue' && n.opType === 'SmallBatchMatMul' ? standardOperators(n, initializers) : [n]));
  return { ...graph, node };
}
