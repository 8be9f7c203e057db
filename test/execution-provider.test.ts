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

describe('worker.precision "auto" (the default)', () => {
  it('builds fp16 for a GPU, where the slot engine and the device loop run fp16, and fp32 for the CPU provider', async () => {
    const { loadConfig } = await import('../src/config/load-config.js');
    const { precisionFor } = await import('../src/model/model-reference.js');
    assert.equal(loadConfig({ env: {} }).worker.precision, 'auto');
    assert.equal(precisionFor('auto', 'cuda:1'), 'fp16');
    assert.equal(precisionFor('auto', 'tensorrt:0'), 'fp16');
    assert.equal(precisionFor('auto', 'cpu'), 'fp32');
    assert.equal(precisionFor('fp32', 'cuda:0'), 'fp32');
  });
});

describe('a CUDA device the addon cannot use', () => {
  it('is one line naming the device and pointing to genqueue doctor (H200 machine with no GPU visible: "cudaSetDevice: no CUDA-capable device is detected")', async () => {
    const { openOnDevice, CudaDeviceUnavailableError } = await import('../src/engine/execution-provider.js');
    const failing = (): never => {
      throw new Error('cudaSetDevice: no CUDA-capable device is detected\n  at native');
    };
    assert.throws(() => openOnDevice(parseDevice('cuda:1'), failing), (e: unknown) => {
      assert.ok(e instanceof CudaDeviceUnavailableError);
      assert.equal(e.message, 'cuda:1: no usable CUDA device (cudaSetDevice: no CUDA-capable device is detected); run `genqueue doctor` for what is missing and how to fix it');
      return true;
    });
    // Other errors, and any error on the CPU provider, pass through as they are.
    assert.throws(() => openOnDevice(parseDevice('cpu'), failing), /^Error: cudaSetDevice/);
    assert.throws(() => openOnDevice(parseDevice('cuda:0'), () => { throw new Error('bad step file'); }), /^Error: bad step file$/);
  });
});
