import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { z } from 'zod';
import { bfloat16BitsToFloat32, float16BitsToFloat32 } from '../onnx/tensor-types.js';

const DType = z.enum(['F32', 'F16', 'BF16', 'F64', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']);
const TensorEntry = z.object({
  dtype: DType,
  shape: z.array(z.number().int().nonnegative()),
  data_offsets: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()]),
});
export type SafetensorsEntry = z.infer<typeof TensorEntry>;

/** A tensor read as float32, whatever its stored float type. */
export interface FloatTensor {
  readonly shape: number[];
  readonly data: Float32Array;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/**
 * Reads one .safetensors file lazily: the JSON header up front, each tensor's bytes on demand
 * (so a multi-GB checkpoint is never held in memory at once).
 */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly entries: Map<string, SafetensorsEntry>,
    private readonly dataStart: number,
  ) {}

  static open(path: string): SafetensorsFile {
    const fd = openSync(path, 'r');
    try {
      const lenBuf = Buffer.alloc(8);
      if (readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new Error(`${path}: too short for a safetensors file`);
      const headerLen = Number(lenBuf.readBigUInt64LE(0));
      if (headerLen <= 0 || headerLen > MAX_HEADER_BYTES) throw new Error(`${path}: implausible header length ${headerLen}`);
      const header = Buffer.alloc(headerLen);
      readSync(fd, header, 0, headerLen, 8);
      let json: unknown;
      try {
        json = JSON.parse(header.toString('utf8'));
      } catch (e) {
        throw new Error(`${path}: header is not JSON (${(e as Error).message})`);
      }
      const entries = new Map<string, SafetensorsEntry>();
      for (const [name, value] of Object.entries(z.record(z.string(), z.unknown()).parse(json))) {
        if (name === '__metadata__') continue;
        const parsed = TensorEntry.safeParse(value);
        if (!parsed.success) throw new Error(`${path}: tensor ${name}: ${parsed.error.issues[0]?.message ?? 'bad entry'}`);
        entries.set(name, parsed.data);
      }
      return new SafetensorsFile(path, entries, 8 + headerLen);
    } finally {
      closeSync(fd);
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: no tensor named ${name}`);
    return e;
  }

  readBytes(name: string): Buffer {
    const { data_offsets: [start, end] } = this.entry(name);
    const buf = Buffer.alloc(end - start);
    const fd = openSync(this.path, 'r');
    try {
      let done = 0;
      while (done < buf.length) {
        const n = readSync(fd, buf, done, buf.length - done, this.dataStart + start + done);
        if (n === 0) throw new Error(`${this.path}: tensor ${name} is truncated`);
        done += n;
      }
    } finally {
      closeSync(fd);
    }
    return buf;
  }

  /** Reads a floating-point tensor and widens it to float32. */
  readFloat(name: string): FloatTensor {
    const e = this.entry(name);
    const out = new Float32Array(e.shape.reduce((a, b) => a * b, 1));
    let at = 0;
    this.forEachFloatChunk(name, out.length, (chunk) => {
      out.set(chunk, at);
      at += chunk.length;
    });
    return { shape: e.shape, data: out };
  }

  /**
   * Reads a floating-point tensor in pieces of at most `maxElements` values, each widened to float32, so that a
   * large tensor (an embedding of 128k rows) is converted without ever being held whole.
   */
  forEachFloatChunk(name: string, maxElements: number, visit: (values: Float32Array) => void): void {
    const e = this.entry(name);
    const width = FLOAT_WIDTH[e.dtype];
    if (width === undefined) throw new Error(`${this.path}: tensor ${name} has dtype ${e.dtype}, expected a float type`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    if ((e.data_offsets[1] - e.data_offsets[0]) !== count * width) throw new Error(`${this.path}: tensor ${name} has ${e.data_offsets[1] - e.data_offsets[0]} bytes for ${count} ${e.dtype} values`);
    const fd = openSync(this.path, 'r');
    try {
      const step = Math.max(1, Math.min(maxElements, count));
      const buf = Buffer.alloc(step * width);
      for (let first = 0; first < count; first += step) {
        const n = Math.min(step, count - first);
        const bytes = n * width;
        let done = 0;
        while (done < bytes) {
          const got = readSync(fd, buf, done, bytes - done, this.dataStart + e.data_offsets[0] + first * width + done);
          if (got === 0) throw new Error(`${this.path}: tensor ${name} is truncated`);
          done += got;
        }
        visit(widen(e.dtype, buf, n));
      }
    } finally {
      closeSync(fd);
    }
  }
}

const FLOAT_WIDTH: Partial<Record<SafetensorsEntry['dtype'], number>> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

function widen(dtype: SafetensorsEntry['dtype'], bytes: Buffer, count: number): Float32Array {
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = bytes.readFloatLE(i * 4);
      break;
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = float16BitsToFloat32(bytes.readUInt16LE(i * 2));
      break;
    case 'BF16':
      for (let i = 0; i < count; i++) out[i] = bfloat16BitsToFloat32(bytes.readUInt16LE(i * 2));
      break;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = bytes.readDoubleLE(i * 8);
      break;
    default:
      throw new Error(`dtype ${dtype} is not a float type`);
  }
  return out;
}

/** Writes float32 tensors as one .safetensors file (used for the demo and benchmark checkpoints). */
export function writeSafetensors(path: string, tensors: ReadonlyMap<string, FloatTensor>): void {
  const header: Record<string, SafetensorsEntry> = {};
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // keeps the data 8-byte aligned, as the reference writer does
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, json);
    for (const t of tensors.values()) writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  } finally {
    closeSync(fd);
  }
}
