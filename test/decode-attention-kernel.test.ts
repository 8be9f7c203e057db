import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { type DecodeAttentionCase, type DecodeAttentionInputs, decodeAttentionInputs, decodeAttentionMismatch } from './harness/decode-attention-reference.js';

// CI has no GPU, so genqueue.DecodeAttention's kernel (native/decode-attention.cc, plain CUDA C++ after the fp16
// helpers) is compiled with g++ against the CPU emulation of a block (test/native/gpu-emulation.h) and compared with
// the reference the CUDA operator test uses: its rotary, the append at each row's position, the slices of the cache
// and their merge by the last block. NVRTC, the PTX loads and speed are for test/genqueue-operators.test.ts on the GPU.

const repo = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const hasCompiler = spawnSync('g++', ['--version']).status === 0;

// One slice and several (the Llama-3.2-1B and Qwen2.5-0.5B groups of 4 and 7 heads of 64), head size 128 with a
// sliding window, multi-head attention at head size 32 with partial rotary, head size 256, the first position.
const CASES: DecodeAttentionCase[] = [
  { heads: 8, kvHeads: 2, headSize: 64, rotaryHalf: 32, capacity: 40, positions: [0, 39] },
  { heads: 8, kvHeads: 2, headSize: 64, rotaryHalf: 32, capacity: 264, positions: [200] },
  { heads: 7, kvHeads: 1, headSize: 64, rotaryHalf: 32, capacity: 300, positions: [150, 299] },
  { heads: 4, kvHeads: 1, headSize: 128, rotaryHalf: 64, capacity: 160, positions: [130], window: 50 },
  { heads: 2, kvHeads: 2, headSize: 32, rotaryHalf: 8, capacity: 70, positions: [69, 3] },
  { heads: 4, kvHeads: 1, headSize: 256, rotaryHalf: 128, capacity: 24, positions: [23] },
];

// DecodeAttention::compute's slices: about one pass of the block's key readers each, at most 64.
function slicing(c: DecodeAttentionCase): { slices: number; slice: number } {
  const perPass = 8 * (32 / (c.headSize / 8)) * 2;
  const slices = Math.min(64, Math.max(1, Math.ceil(c.capacity / perPass)));
  return { slices, slice: Math.ceil(c.capacity / slices) };
}

const key = (c: DecodeAttentionCase): string => `d${c.headSize}_g${c.heads / c.kvHeads}`;

function kernelSource(): string {
  const text = readFileSync(repo('native/decode-attention.cc'), 'utf8');
  const match = /kKernelSource = R"CUDA\(([\s\S]*?)\)CUDA"/.exec(text);
  assert.ok(match, 'native/decode-attention.cc has no kKernelSource');
  return match[1]!.replaceAll('extern "C" ', '');
}

function emulationProgram(shapes: readonly DecodeAttentionCase[]): string {
  const parts = [`#include "${repo('test/native/decode-attention-emulation.h')}"`];
  const keys = [...new Set(shapes.map(key))];
  for (const k of keys) {
    const c = shapes.find((s) => key(s) === k)!;
    parts.push(`namespace ${k} {`, `#define DA_HEAD_SIZE ${c.headSize}`, `#define DA_GROUP ${c.heads / c.kvHeads}`, kernelSource(), '#undef DA_HEAD_SIZE', '#undef DA_GROUP');
    parts.push('static_assert(sizeof(Params) == sizeof(HostParams));', 'void run(const HostParams& h) { Params p; std::memcpy(&p, &h, sizeof p); decode_attention(p); }', '}');
  }
  parts.push(
    'int main(int argc, char** argv) {',
    '  if (argc != 3) return 2;',
    '  const std::string shape = argv[1];',
    ...keys.map((k) => `  if (shape == "${k}") return runCase(&${k}::run, argv[2]);`),
    '  return 2;',
    '}',
  );
  return parts.join('\n');
}

describe('DecodeAttention kernel on the CPU (emulated blocks)', { skip: !hasCompiler && 'g++ not found' }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-attention-'));
    writeFileSync(join(dir, 'emulation.cc'), emulationProgram(CASES));
    execFileSync('g++', ['-std=c++20', '-O1', '-fsanitize=address', '-pthread', '-o', join(dir, 'emulation'), join(dir, 'emulation.cc')], { stdio: 'pipe' });
  });

  /** Runs the kernel on a case's inputs in caseDir: its attention output and the caches after it. */
  const emulate = (c: DecodeAttentionCase, x: DecodeAttentionInputs, caseDir: string) => {
    mkdirSync(caseDir);
    const { slices, slice } = slicing(c);
    const fields = [c.positions.length, c.heads, c.kvHeads, c.headSize, c.capacity, c.rotaryHalf, c.window ?? -1, slices, slice, 1 / Math.sqrt(c.headSize)];
    writeFileSync(join(caseDir, 'params.txt'), `${fields.join(' ')}\n`);
    const files = { qkv: x.qkv, past_key: x.pastKey, past_value: x.pastValue, cos: x.cos, sin: x.sin, seqlens: x.seqlens };
    for (const [name, v] of Object.entries(files)) writeFileSync(join(caseDir, `${name}.bin`), new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    // Leak checking needs ptrace, which containers often refuse; the sanitizer is here for out-of-bounds accesses.
    execFileSync(join(dir, 'emulation'), [key(c), caseDir], { stdio: 'pipe', timeout: 300_000, env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' } });
    const read = (name: string) => {
      const bytes = readFileSync(join(caseDir, `${name}.bin`));
      return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    };
    return { out: read('out'), keys: read('keys'), values: read('values') };
  };
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the reference: rotary, the new key and value at each row\'s position, attention over one or several slices, sliding window', { timeout: 600_000 }, () => {
    CASES.forEach((c, i) => {
      const x = decodeAttentionInputs(c, 900 + i);
      const { out, keys, values } = emulate(c, x, join(dir, `case-${i}`));
      assert.equal(decodeAttentionMismatch(c, x, out, keys, values), undefined, JSON.stringify(c));
    });
  });

  it('a position outside the cache attends to nothing and writes nothing (zeros out, the caches unchanged)', () => {
    const c: DecodeAttentionCase = { heads: 2, kvHeads: 2, headSize: 32, rotaryHalf: 16, capacity: 16, positions: [16, -1] };
    const x = decodeAttentionInputs(c, 77);
    const { out, keys, values } = emulate(c, x, join(dir, 'outside'));
    assert.ok(out.every((v) => v === 0));
    assert.deepEqual(keys, x.pastKey);
    assert.deepEqual(values, x.pastValue);
  });
});
