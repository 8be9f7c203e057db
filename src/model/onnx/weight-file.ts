import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import onnxProto from 'onnx-proto';
import { type ElemTypeName, ElemType, bytesPerElement } from './tensor-types.js';

const { onnx } = onnxProto;

/** Tensors smaller than this stay inside the .onnx file; larger ones go to the external data file. */
const INLINE_LIMIT_BYTES = 1024;
/** Offsets are aligned so that ONNX Runtime can map weights straight from the file. */
const ALIGNMENT = 4096;

/**
 * Writes initializer bytes to a side file (ONNX "external data") as they are produced, so that a model
 * of several GB never has to sit in one protobuf (which is capped at 2 GB) nor fully in memory.
 */
export class WeightFile {
  private readonly fd: number;
  private offset = 0;
  readonly location: string;
  bytesWritten = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'w');
    this.location = basename(path);
  }

  private readonly written = new Map<string, onnxProto.onnx.ITensorProto>();

  /** Whether a tensor of this name is already in the file (graph variants share one weight file). */
  has(name: string): boolean {
    return this.written.has(name);
  }

  /** The tensor's proto; its bytes are produced (and written) only the first time the name is seen. */
  tensor(name: string, type: ElemTypeName, dims: readonly number[], bytes: Uint8Array | (() => Uint8Array)): onnxProto.onnx.ITensorProto {
    const known = this.written.get(name);
    if (known) {
      if (known.dataType !== ElemType[type] || (known.dims ?? []).join(',') !== dims.join(',')) {
        throw new Error(`weight ${name} written twice with different types or shapes`);
      }
      return known;
    }
    const proto = this.encode(name, type, dims, typeof bytes === 'function' ? bytes() : bytes);
    this.written.set(name, proto);
    return proto;
  }

  /**
   * Like tensor(), for a large tensor produced in pieces: `produce` hands each piece to `write` in order, and each
   * goes to the file as it comes (the tensor is never whole in memory).
   */
  streamedTensor(name: string, type: ElemTypeName, dims: readonly number[], produce: (write: (piece: Uint8Array) => void) => void): onnxProto.onnx.ITensorProto {
    const known = this.written.get(name);
    if (known) return this.tensor(name, type, dims, () => new Uint8Array(0));
    const byteLength = dims.reduce((a, b) => a * b, 1) * bytesPerElement(type);
    if (byteLength <= INLINE_LIMIT_BYTES) {
      const pieces: Uint8Array[] = [];
      produce((p) => pieces.push(p.slice()));
      return this.tensor(name, type, dims, Buffer.concat(pieces));
    }
    const start = this.align();
    let written = 0;
    produce((piece) => {
      writeSync(this.fd, piece);
      written += piece.byteLength;
    });
    if (written !== byteLength) throw new Error(`weight ${name}: ${written} bytes produced, ${byteLength} expected`);
    const proto = this.external(name, type, dims, start, byteLength);
    this.written.set(name, proto);
    return proto;
  }

  private encode(name: string, type: ElemTypeName, dims: readonly number[], bytes: Uint8Array): onnxProto.onnx.ITensorProto {
    if (bytes.byteLength <= INLINE_LIMIT_BYTES) return { name, dataType: ElemType[type], dims: [...dims], rawData: bytes };
    const start = this.align();
    writeSync(this.fd, bytes);
    return this.external(name, type, dims, start, bytes.byteLength);
  }

  /** Pads the file to the next aligned offset and returns it. */
  private align(): number {
    const pad = (ALIGNMENT - (this.offset % ALIGNMENT)) % ALIGNMENT;
    if (pad) {
      writeSync(this.fd, new Uint8Array(pad));
      this.offset += pad;
    }
    return this.offset;
  }

  /** Offsets and lengths are decimal strings, so weight files beyond 2 GB (or 4 GB) need nothing special. */
  private external(name: string, type: ElemTypeName, dims: readonly number[], start: number, length: number): onnxProto.onnx.ITensorProto {
    this.offset = start + length;
    this.bytesWritten += length;
    return {
      name,
      dataType: ElemType[type],
      dims: [...dims],
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: this.location },
        { key: 'offset', value: String(start) },
        { key: 'length', value: String(length) },
      ],
    };
  }

  close(): void {
    closeSync(this.fd);
  }
}
