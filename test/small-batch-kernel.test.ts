import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { type SmallBatchCase, firstMismatch, randomInputs, smallBatchReference } from './harness/small-batch-reference.js';

// CI has no GPU, so genqueue.SmallBatchMatMul's kernel (native/small-batch-matmul.cc, plain CUDA C++ after its fp16
// helpers) is compiled with g++ against a CPU emulation of a block (test/native/gpu-emulation.h: threads, barriers
// for __syncthreads and shuffles, AddressSanitizer for every access) and compared with the reference the CUDA
// operator test uses. It checks the kernel's indexing, reductions and epilogues for each shape it can be compiled in;
// what only the GPU shows (NVRTC, the PTX loads, speed) is for test/genqueue-operators.test.ts on the GPU machine.

const repo = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const hasCompiler = spawnSync('g++', ['--version']).status === 0;

/** A kernel shape (SmallBatchMatMul::Shape) and the cases run in it. */
interface EmulatedShape {
  readonly split: number;
  readonly columns: number;
  readonly swiglu: boolean;
  readonly cases: readonly (Omit<SmallBatchCase, 'activation' | 'epsilon'> & { activation?: 'none' | 'fast_gelu' })[];
}

const base = { bias: false, residual: false, norm: 'none' } as const;
// The shapes the operator picks for Llama-3.2-1B, Qwen2.5-0.5B, GPT-2 and the tiny fixtures (widened ones included),
// and the extremes (8 and partly used pieces per thread, 8 columns, tails where the last team's columns run past N).
const SHAPES: EmulatedShape[] = [
  { split: 8, columns: 4, swiglu: false, cases: [{ ...base, rows: 1, n: 37, k: 2048, norm: 'rms' }, { ...base, rows: 2, n: 37, k: 2048, norm: 'rms' }] },
  { split: 8, columns: 2, swiglu: true, cases: [{ ...base, rows: 1, n: 19, k: 2048, norm: 'rms', bias: true }, { ...base, rows: 2, n: 19, k: 2048, norm: 'rms' }] },
  { split: 8, columns: 4, swiglu: true, cases: [{ ...base, rows: 1, n: 21, k: 2048, norm: 'rms' }, { ...base, rows: 2, n: 9, k: 2048, norm: 'rms', bias: true }] },
  { split: 8, columns: 2, swiglu: false, cases: [{ ...base, rows: 1, n: 5, k: 8192, residual: true }, { ...base, rows: 2, n: 6, k: 8192, bias: true, residual: true }] },
  { split: 2, columns: 2, swiglu: true, cases: [{ ...base, rows: 2, n: 13, k: 896, norm: 'rms' }] },
  { split: 2, columns: 4, swiglu: false, cases: [{ ...base, rows: 1, n: 37, k: 896, norm: 'rms' }] },
  { split: 4, columns: 4, swiglu: false, cases: [{ ...base, rows: 2, n: 33, k: 1280, norm: 'layer', bias: true, activation: 'fast_gelu' }] },
  { split: 8, columns: 1, swiglu: false, cases: [{ ...base, rows: 1, n: 5, k: 8192, bias: true, residual: true }, { ...base, rows: 2, n: 6, k: 8192, residual: true }] },
  { split: 8, columns: 1, swiglu: false, cases: [{ ...base, rows: 2, n: 7, k: 4864, residual: true }] },
  { split: 8, columns: 2, swiglu: false, cases: [{ ...base, rows: 1, n: 9, k: 4864, residual: true }] },
  { split: 8, columns: 8, swiglu: false, cases: [{ ...base, rows: 1, n: 70, k: 2048, norm: 'rms' }, { ...base, rows: 2, n: 17, k: 2048, norm: 'rms' }] },
  { split: 8, columns: 1, swiglu: false, cases: [{ ...base, rows: 2, n: 3, k: 16384, norm: 'rms', residual: true }] },
  { split: 8, columns: 2, swiglu: false, cases: [{ ...base, rows: 1, n: 13, k: 3072, norm: 'layer', bias: true, residual: true }] },
  { split: 2, columns: 1, swiglu: false, cases: [{ ...base, rows: 1, n: 9, k: 896, norm: 'rms', bias: true }, { ...base, rows: 2, n: 9, k: 896, norm: 'rms', bias: true }] },
  { split: 2, columns: 1, swiglu: true, cases: [{ ...base, rows: 2, n: 11, k: 896, norm: 'rms' }] },
  { split: 2, columns: 2, swiglu: false, cases: [{ ...base, rows: 2, n: 50, k: 768, norm: 'layer' }] },
  { split: 4, columns: 8, swiglu: false, cases: [{ ...base, rows: 2, n: 65, k: 1024 }] },
  { split: 1, columns: 4, swiglu: false, cases: [{ ...base, rows: 2, n: 70, k: 16, norm: 'layer', bias: true, activation: 'fast_gelu' }] },
  { split: 1, columns: 1, swiglu: true, cases: [{ ...base, rows: 1, n: 48, k: 16, norm: 'rms', bias: true }] },
];

const piecesPerThread = (k: number, split: number): number => Math.ceil(k / 8 / (32 * split));

/** The kernel source between `kKernelSource = R"CUDA(` and `)CUDA"`, as NVRTC receives it after the fp16 helpers. */
function kernelSource(): string {
  const text = readFileSync(repo('native/small-batch-matmul.cc'), 'utf8');
  const match = /kKernelSource = R"CUDA\(([\s\S]*?)\)CUDA"/.exec(text);
  assert.ok(match, 'native/small-batch-matmul.cc has no kKernelSource');
  return match[1]!;
}

/** One translation unit: the emulation, each shape's kernel in a namespace of its own (#defines as the operator writes them), and the driver. */
function emulationProgram(shapes: readonly { key: string; split: number; columns: number; pieces: number; swiglu: boolean }[]): string {
  const source = kernelSource().replaceAll('extern "C" ', '');
  const parts = [`#include "${repo('test/native/small-batch-emulation.h')}"`];
  for (const s of shapes) {
    const defines = { SBMM_SPLIT: s.split, SBMM_COLUMNS: s.columns, SBMM_PIECES: s.pieces, SBMM_GLU: s.swiglu ? 1 : 0 };
    parts.push(`namespace shape_${s.key} {`);
    for (const [name, value] of Object.entries(defines)) parts.push(`#define ${name} ${value}`);
    parts.push(source);
    for (const name of Object.keys(defines)) parts.push(`#undef ${name}`);
    parts.push(
      'static_assert(sizeof(Params) == sizeof(HostParams));',
      ...[1, 2].map((r) => `void run${r}(const HostParams& h) { Params p; std::memcpy(&p, &h, sizeof p); small_batch_matmul_${r}(p); }`),
      '}',
    );
  }
  parts.push(
    'const EmulatedShape kShapes[] = {',
    ...shapes.map((s) => `  {"${s.key}", ${s.split}, ${s.columns}, ${s.swiglu}, {&shape_${s.key}::run1, &shape_${s.key}::run2}},`),
    '};',
    'int main(int argc, char** argv) { return argc == 2 ? runCases(kShapes, sizeof kShapes / sizeof kShapes[0], argv[1]) : 2; }',
  );
  return parts.join('\n');
}

describe('SmallBatchMatMul kernel on the CPU (emulated blocks)', { skip: !hasCompiler && 'g++ not found' }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-sbmm-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the reference outputs for each kernel shape: 1-2 rows, layer/RMS normalization, bias, residual, FastGelu, SwiGLU', { timeout: 600_000 }, () => {
    const shapes = SHAPES.map((s, i) => {
      const pieces = Math.max(...s.cases.map((c) => piecesPerThread(c.k, s.split)));
      return { ...s, pieces, key: `${i}_${s.split}_${s.columns}_${pieces}_${s.swiglu ? 1 : 0}` };
    });
    writeFileSync(join(dir, 'emulation.cc'), emulationProgram(shapes));
    execFileSync('g++', ['-std=c++20', '-O0', '-fsanitize=address', '-pthread', '-o', join(dir, 'emulation'), join(dir, 'emulation.cc')], {
      stdio: 'pipe',
    });
    const manifest: string[] = [];
    const checks: { c: SmallBatchCase; output: string; reference: Float64Array }[] = [];
    shapes.forEach((s) =>
      s.cases.forEach((partial, j) => {
        assert.equal(piecesPerThread(partial.k, s.split), s.pieces, `${s.key}: every case of a shape needs its pieces per thread`);
        const c: SmallBatchCase = { ...partial, activation: s.swiglu ? 'swiglu' : (partial.activation ?? 'none'), epsilon: 1e-5 };
        const x = randomInputs(c, 7 + checks.length);
        const input = join(dir, `${s.key}_${j}.in`);
        const output = join(dir, `${s.key}_${j}.out`);
        const arrays = [x.a, x.b, x.bias, x.residual, x.gamma, x.beta].filter((v): v is Uint16Array => v !== undefined);
        writeFileSync(input, Buffer.concat(arrays.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength))));
        const norm = { none: 0, layer: 1, rms: 2 }[c.norm];
        manifest.push([s.key, c.rows, c.n, c.k, norm, c.activation === 'fast_gelu' ? 1 : 0, c.bias ? 1 : 0, c.residual ? 1 : 0, c.epsilon, input, output].join(' '));
        checks.push({ c, output, reference: smallBatchReference(c, x) });
      }),
    );
    writeFileSync(join(dir, 'cases.txt'), `${manifest.join('\n')}\n`);
    // Leak checking needs ptrace, which containers often refuse; the sanitizer is here for out-of-bounds accesses.
    execFileSync(join(dir, 'emulation'), [join(dir, 'cases.txt')], { stdio: 'pipe', timeout: 540_000, env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' } });
    for (const { c, output, reference } of checks) {
      const bytes = readFileSync(output);
      const values = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
      assert.equal(firstMismatch(c, values, reference), undefined, JSON.stringify(c));
    }
  });
});
