import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CUDA_PROVIDER_PACKAGE, CudaProviderInstallError, installCudaProvider } from '../src/engine/cuda-provider-install.js';
import { CudaProviderUnavailableError, missingCudaProviderLibraries } from '../src/engine/execution-provider.js';
import { Generator } from '../src/engine/generator.js';
import { ModelCache } from '../src/model/model-cache.js';
import { genqueue } from './harness/cli-process.js';
import { fixturePath } from './harness/fixtures.js';

const run = promisify(execFile);

const hasDriver = existsSync('/proc/driver/nvidia/version');
const providerInstalled = missingCudaProviderLibraries().length === 0;

describe('CUDA install path on a machine without a GPU', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-cuda-'));
    env = { ...process.env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), GENQUEUE_LOG_LEVEL: 'warn' };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('doctor reports the GPU parts missing, each with a fix, and exits non-zero', { skip: hasDriver && 'this machine has an NVIDIA driver' }, async () => {
    const r = await genqueue(['doctor'], env);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stdout.trim().split('\n');
    for (const l of lines.slice(0, -1)) assert.match(l, /^(ok: |missing: |missing \(optional: the device loop\): |skipped: )/);
    assert.match(r.stdout, /^missing: NVIDIA driver — .+ — fix: install the NVIDIA driver/m);
    assert.match(r.stdout, /^missing: GPU cuda:0 — no GPU visible — fix: /m);
    assert.match(r.stdout, /^missing: libcuda\.so\.1 — .+ — fix: /m);
    assert.match(r.stdout, /^(ok|missing): libcublas\.so\.13 — /m);
    if (!providerInstalled) assert.match(r.stdout, /^missing: CUDA execution provider — .+ — fix: npx genqueue install-cuda/m);
    assert.match(r.stdout, /^(ok|missing \(optional: the device loop\)): libnvrtc\.so\.13 — /m);
    assert.match(r.stdout, /^(ok|missing \(optional: the device loop\)): device-loop addon — /m);
    assert.match(r.stdout, /^skipped: CUDA session on cuda:0 — fix the missing items above first$/m);
    assert.match(lines.at(-1)!, /^\d+ problem\(s\): --device cuda:0 will not work until they are fixed$/);
  });

  it('generate --device cuda:0 without the provider fails with one line that points to doctor', { skip: providerInstalled && 'the CUDA provider is installed here' }, async () => {
    const built = (await new ModelCache(join(dir, 'cache')).resolve(fixturePath('gpt2-tiny'))).dir;
    const r = await genqueue(['generate', '--model', built, '--prompt', 'Hello', '--device', 'cuda:0'], env);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^genqueue: cuda:0: ONNX Runtime's CUDA execution provider is unavailable \(.*install-cuda.*\); run `genqueue doctor` for what is missing and how to fix it$/);
    await assert.rejects(Generator.open(built, { device: { kind: 'cuda', deviceId: 0 } }), (e: unknown) => e instanceof CudaProviderUnavailableError && e.device === 'cuda:0');
  });
});

describe('installCudaProvider', () => {
  let dir: string;
  let tarball: string;
  let pkg: typeof CUDA_PROVIDER_PACKAGE;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-cuda-install-'));
    // A tarball laid out as the real package is (package/Plugins/Linux/x64/…), with stand-in files.
    const lib = join(dir, 'src', 'package', 'Plugins', 'Linux', 'x64');
    mkdirSync(lib, { recursive: true });
    for (const f of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so']) writeFileSync(join(lib, f), f);
    tarball = join(dir, 'provider.tgz');
    await run('tar', ['-czf', tarball, '-C', join(dir, 'src'), 'package']);
    pkg = { ...CUDA_PROVIDER_PACKAGE, integrity: `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}` };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('unpacks a tarball whose digest matches into the cache and links the libraries where ONNX Runtime looks; a rerun only relinks', async () => {
    const binDir = join(dir, 'bin');
    mkdirSync(binDir);
    const cacheDir = join(dir, 'cache');
    assert.deepEqual(missingCudaProviderLibraries(binDir), ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so']);
    const first = await installCudaProvider({ cacheDir, binDir, from: tarball, pkg });
    assert.equal(first.fetched, true);
    assert.equal(first.linked.length, 3);
    assert.deepEqual(missingCudaProviderLibraries(binDir), []);
    assert.equal(readlinkSync(join(binDir, 'libonnxruntime_providers_cuda.so')), join(first.store, 'libonnxruntime_providers_cuda.so'));
    rmSync(join(binDir, 'libonnxruntime_providers_cuda.so')); // as after `npm ci`
    const second = await installCudaProvider({ cacheDir, binDir, pkg });
    assert.equal(second.fetched, false);
    assert.equal(readFileSync(join(binDir, 'libonnxruntime_providers_cuda.so'), 'utf8'), 'libonnxruntime_providers_cuda.so');
  });

  it('refuses a tarball that is not the pinned package, and a folder without the provider', async () => {
    const binDir = join(dir, 'bin2');
    mkdirSync(binDir);
    await assert.rejects(
      installCudaProvider({ cacheDir: join(dir, 'cache2'), binDir, from: tarball }),
      (e: unknown) => e instanceof CudaProviderInstallError && /is not com\.github\.asus4\.onnxruntime\.linux-x64-gpu@0\.4\.9/.test(e.message),
    );
    assert.deepEqual(missingCudaProviderLibraries(binDir).length, 2, 'nothing linked');
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    await assert.rejects(installCudaProvider({ cacheDir: join(dir, 'cache2'), binDir, from: empty }), /libonnxruntime_providers_shared\.so, libonnxruntime_providers_cuda\.so missing/);
  });
});
