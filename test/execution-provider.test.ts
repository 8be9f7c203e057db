import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDevice, preferFullFp32OnCuda } from '../src/engine/execution-provider.js';

// On the H200, fp32 Llama fixtures on CUDA gave other tokens than the CPU at near-ties until cuBLAS was held to
// full fp32 (parity-llama.test.ts's CUDA block: 5 failures with TF32, none with NVIDIA_TF32_OVERRIDE=0).
describe('fp32 on CUDA', () => {
  it('asks cuBLAS for full fp32 (NVIDIA_TF32_OVERRIDE=0) for a CUDA device, unless the environment says otherwise', () => {
    const saved = process.env.NVIDIA_TF32_OVERRIDE;
    try {
      delete process.env.NVIDIA_TF32_OVERRIDE;
      preferFullFp32OnCuda(parseDevice('cpu'));
      assert.equal(process.env.NVIDIA_TF32_OVERRIDE, undefined);
      preferFullFp32OnCuda(parseDevice('cuda:0'));
      assert.equal(process.env.NVIDIA_TF32_OVERRIDE, '0');
      process.env.NVIDIA_TF32_OVERRIDE = '1';
      preferFullFp32OnCuda(parseDevice('cuda:1'));
      assert.equal(process.env.NVIDIA_TF32_OVERRIDE, '1');
    } finally {
      if (saved === undefined) delete process.env.NVIDIA_TF32_OVERRIDE;
      else process.env.NVIDIA_TF32_OVERRIDE = saved;
    }
  });
});
