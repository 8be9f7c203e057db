import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import onnxProto from 'onnx-proto';
import { type ElemTypeName, ElemType } from './tensor-types.js';

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

  private encode(name: string, type: ElemTypeName, dims: readonly number[], bytes: Uint8Array): onnxProto.onnx.ITensorProto {
    const proto: onnxProto.onnx.ITensorProto = { name, dataType: ElemType[type], dims: [...dims] };
    if (bytes.byteLength <= INLINE_LIMIT_BYTES) {
      proto.rawData = bytes;
      return proto;
    }
    const pad = (ALIGNMENT - (this.offset % ALIGNMENT)) % ALIGNMENT;
    if (pad) {
      writeSync(this.fd, new Uint8Array(pad));
      this.offset += pad;
    }
    writeSync(this.fd, bytes);
    proto.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    proto.externalData = [
      { key: 'location', value: this.location },
      { key: 'offset', value: String(this.offset) },
      { key: 'length', value: String(bytes.byteLength) },
    ];
    this.offset += bytes.byteLength;
    this.bytesWritten += bytes.byteLength;
    return proto;
  }

  close(): void {
    closeSync(this.fd);
  }
}
