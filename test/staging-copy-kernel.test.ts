import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

// CI has no GPU, so the slot loop's staging copy kernel (native/staging-copy.cc) is compiled with g++ and run block by
// block on the CPU (test/native/staging-copy-emulation.h): a prefill run's staging rows must land in their slots
// exactly as the CPU provider's per-head copies put them, and nothing else in the caches may change. The CUDA slot
// engine tests check the same on the GPU through the tokens.

const repo = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const hasCompiler = spawnSync('g++', ['--version']).status === 0;

function kernelSource(): string {
  const match = /kKernelSource = R"CUDA\(([\s\S]*?)\)CUDA"/.exec(readFileSync(repo('native/staging-copy.cc'), 'utf8'));
  assert.ok(match, 'native/staging-copy.cc has no kKernelSource');
  return match[1]!;
}

describe('staging copy kernel on the CPU (emulated blocks)', { skip: !hasCompiler && 'g++ not found' }, () => {
  it('copies each row\'s first positions, every head, layer, key and value, into its slot and nothing else', () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-staging-'));
    try {
      // GPT-2-like heads of 64 fp16 values (128-byte rows) and Llama-like 32-value heads over 2 kv heads; rows in any
      // slot order, a row with one position, a row with the whole chunk, slots left untouched.
      const program = [
        `#include "${repo('test/native/staging-copy-emulation.h')}"`,
        kernelSource(),
        'int main() {',
        '  const StagingCase cases[] = {',
        '    {6, 3, 4, 16, 9, 24, 128, {7, 0, 3}, {16, 1, 9}},',
        '    {4, 2, 8, 32, 5, 40, 64, {4, 1, 2, 0, 3}, {32, 31, 7, 2, 17}},',
        '  };',
        '  for (const StagingCase& c : cases)',
        '    if (!runStagingCase(c)) return 1;',
        '  std::puts("ok");',
        '  return 0;',
        '}',
      ].join('\n');
      writeFileSync(join(dir, 'emulation.cc'), program);
      execFileSync('g++', ['-std=c++20', '-O1', '-fsanitize=address', '-o', join(dir, 'emulation'), join(dir, 'emulation.cc')], { stdio: 'pipe' });
      const out = execFileSync(join(dir, 'emulation'), { stdio: 'pipe', env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' } }).toString();
      assert.equal(out.trim(), 'ok');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
