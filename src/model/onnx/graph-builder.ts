import onnxProto from 'onnx-proto';
import { type ElemTypeName, ElemType } from './tensor-types.js';
import type { WeightFile } from './weight-file.js';

const { onnx } = onnxProto;
type IGraphProto = onnxProto.onnx.IGraphProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;

/** Attribute values: a plain number is an INT (it must be an integer); floats are wrapped so that 1.0 stays a float. */
export type AttrValue =
  | number
  | string
  | number[]
  | { float: number }
  | { floats: number[] }
  | { graph: IGraphProto }
  | { tensor: ITensorProto };

export type Dim = number | string;

const MICROSOFT = 'com.microsoft';
/** genqueue's own operators: registered only by the native device-loop addon's CUDA sessions (native/). */
export const GENQUEUE_DOMAIN = 'genqueue';

function attribute(name: string, value: AttrValue): IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: ${value} is not an integer; wrap floats as { float }`);
    return { name, type: T.INT, i: value };
  }
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if ('float' in value) return { name, type: T.FLOAT, f: value.float };
  if ('floats' in value) return { name, type: T.FLOATS, floats: value.floats };
  if ('graph' in value) return { name, type: T.GRAPH, g: value.graph };
  return { name, type: T.TENSOR, t: value.tensor };
}

function valueInfo(name: string, type: ElemTypeName, dims: readonly Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ElemType[type],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/**
 * Accumulates one ONNX graph: inputs, outputs, initializers (large ones routed to a WeightFile) and nodes.
 * Node names are generated; value names are the caller's, so graphs read like the model code that built them.
 */
export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly initializers: ITensorProto[] = [];
  private readonly names = new Set<string>();
  private counter = 0;

  constructor(
    readonly name: string,
    private readonly weights?: WeightFile,
  ) {}

  /**
   * A graph for a control-flow attribute (If/Loop branch). It may read this graph's values by name (outer
   * scope); its own constants stay inline, and its node names carry its name so they never collide.
   */
  subgraph(name: string): GraphBuilder {
    return new GraphBuilder(name);
  }

  input(name: string, type: ElemTypeName, dims: readonly Dim[]): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  output(name: string, type: ElemTypeName, dims: readonly Dim[]): string {
    this.outputs.push(valueInfo(name, type, dims));
    return name;
  }

  /**
   * Adds a weight; bytes are raw little-endian data of `type`, or a function producing them, called only when
   * the weight file does not hold this name yet (so graph variants read each checkpoint tensor once).
   */
  initializer(name: string, type: ElemTypeName, dims: readonly number[], bytes: Uint8Array | (() => Uint8Array)): string {
    this.claim(name);
    const tensor: ITensorProto = this.weights
      ? this.weights.tensor(name, type, dims, bytes)
      : { name, dataType: ElemType[type], dims: [...dims], rawData: typeof bytes === 'function' ? bytes() : bytes };
    this.initializers.push(tensor);
    return name;
  }

  /** A large weight produced in pieces (WeightFile.streamedTensor); without a weight file, the pieces are joined inline. */
  streamedInitializer(name: string, type: ElemTypeName, dims: readonly number[], produce: (write: (piece: Uint8Array) => void) => void): string {
    if (!this.weights) {
      const pieces: Uint8Array[] = [];
      produce((p) => pieces.push(p.slice()));
      return this.initializer(name, type, dims, Buffer.concat(pieces));
    }
    this.claim(name);
    this.initializers.push(this.weights.streamedTensor(name, type, dims, produce));
    return name;
  }

  int64s(name: string, values: readonly number[]): string {
    return this.initializer(name, 'int64', [values.length], new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer));
  }

  int32s(name: string, values: readonly number[], dims: readonly number[] = [values.length]): string {
    return this.initializer(name, 'int32', dims, new Uint8Array(Int32Array.from(values).buffer));
  }

  /** Adds a standard-domain node; returns its output names. */
  op(opType: string, inputs: readonly string[], outputs: readonly string[] | number, attrs: Record<string, AttrValue> = {}): string[] {
    return this.addNode('', opType, inputs, outputs, attrs);
  }

  /** Adds a com.microsoft contrib node (ONNX Runtime's fused operators). */
  msOp(opType: string, inputs: readonly string[], outputs: readonly string[] | number, attrs: Record<string, AttrValue> = {}): string[] {
    return this.addNode(MICROSOFT, opType, inputs, outputs, attrs);
  }

  /** Adds a node of genqueue's own domain (see GENQUEUE_DOMAIN). */
  genqueueOp(opType: string, inputs: readonly string[], outputs: readonly string[] | number, attrs: Record<string, AttrValue> = {}): string[] {
    return this.addNode(GENQUEUE_DOMAIN, opType, inputs, outputs, attrs);
  }

  /** A fresh value name with a readable prefix. */
  fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.names.has(name));
    this.names.add(name);
    return name;
  }

  get nodeCount(): number {
    return this.nodes.length;
  }

  build(): IGraphProto {
    return {
      name: this.name,
      node: this.nodes,
      input: this.inputs,
      output: this.outputs,
      initializer: this.initializers,
    };
  }

  private addNode(
    domain: string,
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[] | number,
    attrs: Record<string, AttrValue>,
  ): string[] {
    const outNames =
      typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase())) : [...outputs];
    for (const o of outNames) if (o !== '') this.names.add(o);
    this.nodes.push({
      name: `${this.name}/${opType}_${this.nodes.length}`,
      opType,
      domain,
      input: [...inputs],
      output: outNames,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outNames;
  }

  private claim(name: string): void {
    if (this.names.has(name)) throw new Error(`duplicate value name ${name}`);
    this.names.add(name);
  }
}

export function graphAttr(graph: IGraphProto): AttrValue {
  return { graph };
}

/**
 * Serializes a model: ai.onnx opset 17 plus com.microsoft 1, IR 10 (ONNX Runtime 1.29 reads IR ≤ 13), and
 * genqueue 1 only when the top-level graph uses it (a session without the addon's operators would refuse it).
 */
export function encodeModel(graph: IGraphProto, producer: string, metadata: Record<string, string> = {}): Uint8Array {
  const usesGenqueue = (graph.node ?? []).some((n) => n.domain === GENQUEUE_DOMAIN);
  return onnx.ModelProto.encode({
    irVersion: 10,
    producerName: producer,
    opsetImport: [
      { domain: '', version: 17 },
      { domain: MICROSOFT, version: 1 },
      ...(usesGenqueue ? [{ domain: GENQUEUE_DOMAIN, version: 1 }] : []),
    ],
    graph,
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  }).finish();
}
