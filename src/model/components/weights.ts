import type { CheckpointTensors } from '../checkpoint/hf-checkpoint.js';
import type { GraphBuilder } from '../onnx/graph-builder.js';
import { type ElemTypeName, type FloatPrecision, encodeFloats, floatElemType, transposeMatrix } from '../onnx/tensor-types.js';

/** A checkpoint tensor whose shape does not match what the config says it must be. */
export class TensorShapeError extends Error {
  override readonly name = 'TensorShapeError';
  constructor(tensor: string, actual: readonly number[], expected: readonly number[]) {
    super(`tensor ${tensor} has shape [${actual.join(', ')}], expected [${expected.join(', ')}] from config.json`);
  }
}

/** Values converted at a time when a tensor streams to the weight file (16 MB of float32). */
const CHUNK_ELEMENTS = 4 * 1024 * 1024;

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Checkpoint tensors as graph initializers in the build's precision, each shape checked against the one the
 * config implies. Initializers are named after the tensor without the checkpoint's prefix; a weight already in
 * the weight file (another step variant asked first) is not read again.
 */
export class WeightLoader {
  readonly type: ElemTypeName;

  constructor(
    private readonly g: GraphBuilder,
    private readonly tensors: CheckpointTensors,
    readonly precision: FloatPrecision,
    private readonly prefix = '',
  ) {
    this.type = floatElemType(precision);
  }

  has(name: string): boolean {
    return this.tensors.has(this.prefix + name);
  }

  /**
   * The tensor as stored, [dims] checked; `stored` names it in the checkpoint when that is not prefix + name.
   * Converted to the build's precision piece by piece as it streams to the weight file.
   */
  tensor(name: string, dims: readonly number[], stored = this.prefix + name): string {
    const shape = this.tensors.shape(stored);
    if (!sameShape(shape, dims)) throw new TensorShapeError(stored, shape, dims);
    return this.g.streamedInitializer(name, this.type, dims, (write) =>
      this.tensors.forEachChunk(stored, CHUNK_ELEMENTS, (values) => write(encodeFloats(values, this.precision))),
    );
  }

  /** A stored [rows, cols] matrix as a [cols, rows] initializer named `${name}.t` (e.g. a Linear weight for MatMul). */
  transposed(name: string, rows: number, cols: number): string {
    return this.g.initializer(`${name}.t`, this.type, [cols, rows], () => encodeFloats(transposeMatrix(this.read(name, [rows, cols]), rows, cols), this.precision));
  }

  /**
   * Several stored [rows_i, cols] matrices stacked along their rows and transposed: one [cols, Σ rows_i]
   * initializer, so that one MatMul computes every projection (fused q/k/v, gate/up).
   */
  stackedTransposed(initName: string, parts: readonly { name: string; rows: number }[], cols: number): string {
    const total = parts.reduce((n, p) => n + p.rows, 0);
    return this.g.initializer(initName, this.type, [cols, total], () => encodeFloats(transposeMatrix(this.readStacked(parts, cols), total, cols), this.precision));
  }

  /**
   * Several stored [rows_i, cols] matrices stacked along their rows as they are: one [Σ rows_i, cols] initializer
   * ([out, in], as genqueue.SmallBatchMatMul reads its weights).
   */
  stacked(initName: string, parts: readonly { name: string; rows: number }[], cols: number): string {
    const total = parts.reduce((n, p) => n + p.rows, 0);
    return this.g.initializer(initName, this.type, [total, cols], () => encodeFloats(this.readStacked(parts, cols), this.precision));
  }

  /** Several stored vectors concatenated (the biases of a stacked projection). */
  concatenated(initName: string, parts: readonly { name: string; size: number }[]): string {
    const total = parts.reduce((n, p) => n + p.size, 0);
    return this.g.initializer(initName, this.type, [total], () => {
      const out = new Float32Array(total);
      let at = 0;
      for (const p of parts) {
        out.set(this.read(p.name, [p.size]), at);
        at += p.size;
      }
      return encodeFloats(out, this.precision);
    });
  }

  private readStacked(parts: readonly { name: string; rows: number }[], cols: number): Float32Array {
    const stacked = new Float32Array(parts.reduce((n, p) => n + p.rows, 0) * cols);
    let row = 0;
    for (const p of parts) {
      stacked.set(this.read(p.name, [p.rows, cols]), row * cols);
      row += p.rows;
    }
    return stacked;
  }

  private read(name: string, dims: readonly number[]): Float32Array {
    return this.readStored(this.prefix + name, dims);
  }

  private readStored(stored: string, dims: readonly number[]): Float32Array {
    const t = this.tensors.read(stored);
    if (!sameShape(t.shape, dims)) throw new TensorShapeError(stored, t.shape, dims);
    return t.data;
  }
}
