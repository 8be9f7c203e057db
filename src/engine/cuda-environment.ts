import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { encodeModel, GraphBuilder } from '../model/onnx/graph-builder.js';
import { DEVICE_LOOP_ADDON } from './device-loop-runner.js';
import { missingCudaProviderLibraries, onnxRuntimeBinDir } from './execution-provider.js';

/**
 * What the CUDA provider and the device loop need from the machine, checked without loading CUDA (reading
 * /proc, nvidia-smi, the loader's search path), then with one real session once everything else is in place.
 */

export type CheckStatus = 'ok' | 'missing' | 'skipped';

export interface EnvironmentCheck {
  readonly name: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** How to fix a missing item. */
  readonly fix?: string;
  /** Needed only by the native device loop (`--device-loop-max-batch`), not by the CUDA provider. */
  readonly optional?: boolean;
}

/** CUDA 13 needs the R580 driver or newer. */
const MIN_DRIVER_MAJOR = 580;

/** The provider's DT_NEEDED CUDA libraries (readelf -d libonnxruntime_providers_cuda.so of ONNX Runtime 1.29.0, CUDA 13). */
export const PROVIDER_CUDA_LIBRARIES = ['libcudart.so.13', 'libcublas.so.13', 'libcublasLt.so.13', 'libcurand.so.10'] as const;

/** Folders a CUDA install often uses that the loader does not search unless told to. */
const HINT_DIRS = ['/usr/local/cuda/lib64', '/usr/local/cuda/targets/x86_64-linux/lib', '/usr/local/cuda-13/lib64', '/usr/local/cuda-13.0/lib64'];

const DEFAULT_DIRS = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'];

const CUDA_LIBRARIES_FIX =
  "install the CUDA 13 runtime libraries (NVIDIA's apt repository: cuda-libraries-13-0; or a PyTorch CUDA 13 install's site-packages/nvidia/cu13/lib) and put their folder on LD_LIBRARY_PATH";

export interface LibrarySearch {
  /** Where the dynamic loader would find each soname: LD_LIBRARY_PATH, the ldconfig cache, the default folders. */
  find(soname: string): string | undefined;
  /** A copy the loader would not find (a CUDA folder missing from LD_LIBRARY_PATH). */
  findOffPath(soname: string): string | undefined;
}

export function librarySearch(env: NodeJS.ProcessEnv = process.env): LibrarySearch {
  const pathDirs = (env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  const cache = ldconfigCache();
  const inDirs = (dirs: readonly string[], soname: string): string | undefined => dirs.map((d) => join(d, soname)).find((p) => existsSync(p));
  return {
    find: (soname) => inDirs(pathDirs, soname) ?? cache.get(soname) ?? inDirs(DEFAULT_DIRS, soname),
    findOffPath: (soname) => inDirs(HINT_DIRS, soname),
  };
}

/** soname → path from `ldconfig -p` (empty when ldconfig is not there). */
function ldconfigCache(): Map<string, string> {
  const out = new Map<string, string>();
  for (const bin of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    try {
      const text = execFileSync(bin, ['-p'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
      for (const line of text.split('\n')) {
        const m = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)/.exec(line);
        if (m && m[2]!.includes('x86-64') && !out.has(m[1]!)) out.set(m[1]!, m[3]!);
      }
      return out;
    } catch {
      // try the next location
    }
  }
  return out;
}

interface Gpu {
  readonly index: number;
  readonly name: string;
}

interface DriverInfo {
  readonly version?: string;
  readonly gpus?: Gpu[];
}

function readDriver(): DriverInfo {
  let version: string | undefined;
  let gpus: Gpu[] | undefined;
  try {
    const text = execFileSync('nvidia-smi', ['--query-gpu=index,name,driver_version', '--format=csv,noheader'], {
      encoding: 'utf8',
      timeout: 20_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    gpus = [];
    for (const line of text.trim().split('\n').filter(Boolean)) {
      const [index, name, driver] = line.split(',').map((s) => s.trim());
      gpus.push({ index: Number(index), name: name ?? '?' });
      version ??= driver;
    }
  } catch {
    // no nvidia-smi: fall back to what the kernel module says
  }
  if (!version) {
    try {
      version = /Kernel Module\s+(?:for \S+\s+)?([\d.]+)/.exec(readFileSync('/proc/driver/nvidia/version', 'utf8'))?.[1];
    } catch {
      // no driver loaded
    }
  }
  if (!gpus && existsSync('/proc/driver/nvidia/gpus')) {
    gpus = readdirSync('/proc/driver/nvidia/gpus').map((bus, index) => ({ index, name: bus }));
  }
  return { ...(version ? { version } : {}), ...(gpus ? { gpus } : {}) };
}

export interface CheckOptions {
  readonly deviceId: number;
  readonly env?: NodeJS.ProcessEnv;
  /** Skip the final session (the probes only). */
  readonly noSession?: boolean;
}

/** Every check, in the order a person fixes them; the session runs only when nothing required is missing. */
export async function checkCudaEnvironment(o: CheckOptions): Promise<EnvironmentCheck[]> {
  const checks: EnvironmentCheck[] = [];
  const add = (c: EnvironmentCheck): void => void checks.push(c);
  const platformOk = process.platform === 'linux' && process.arch === 'x64';
  add(
    platformOk
      ? { name: 'platform', status: 'ok', detail: 'linux-x64' }
      : { name: 'platform', status: 'missing', detail: `${process.platform}-${process.arch}`, fix: 'the CUDA provider genqueue installs is for linux-x64' },
  );

  const driver = readDriver();
  const major = Number(driver.version?.split('.')[0]);
  if (!driver.version) {
    add({ name: 'NVIDIA driver', status: 'missing', detail: 'no nvidia-smi, no /proc/driver/nvidia/version', fix: `install the NVIDIA driver (R${MIN_DRIVER_MAJOR} or newer); in a container, run it with the GPU exposed (--gpus)` });
  } else if (major < MIN_DRIVER_MAJOR) {
    add({ name: 'NVIDIA driver', status: 'missing', detail: `${driver.version} is older than CUDA 13 needs`, fix: `upgrade to R${MIN_DRIVER_MAJOR} or newer` });
  } else {
    add({ name: 'NVIDIA driver', status: 'ok', detail: driver.version });
  }
  const gpu = driver.gpus?.find((g) => g.index === o.deviceId);
  if (gpu) add({ name: `GPU cuda:${o.deviceId}`, status: 'ok', detail: gpu.name });
  else {
    const count = driver.gpus?.length ?? 0;
    add({
      name: `GPU cuda:${o.deviceId}`,
      status: 'missing',
      detail: count ? `${count} GPU(s) visible` : 'no GPU visible',
      fix: count ? `use --device cuda:0${count > 1 ? `..cuda:${count - 1}` : ''}` : 'check nvidia-smi and CUDA_VISIBLE_DEVICES',
    });
  }

  const search = librarySearch(o.env);
  const library = (soname: string, what: string, fix: string, optional = false): void => {
    const found = search.find(soname);
    if (found) return add({ name: soname, status: 'ok', detail: found, ...(optional ? { optional } : {}) });
    const off = search.findOffPath(soname);
    add({
      name: soname,
      status: 'missing',
      detail: off ? `${what}: ${off} exists but the loader does not search ${off.slice(0, off.lastIndexOf('/'))}` : `${what}: not on LD_LIBRARY_PATH, in the ldconfig cache or the system folders`,
      fix: off ? `export LD_LIBRARY_PATH=${off.slice(0, off.lastIndexOf('/'))}:$LD_LIBRARY_PATH` : fix,
      ...(optional ? { optional } : {}),
    });
  };
  library('libcuda.so.1', 'the driver library', 'it comes with the NVIDIA driver (in a container: the NVIDIA container toolkit mounts it)');
  for (const lib of PROVIDER_CUDA_LIBRARIES) library(lib, 'needed by the CUDA provider', CUDA_LIBRARIES_FIX);

  const binDir = onnxRuntimeBinDir();
  const missingProvider = missingCudaProviderLibraries(binDir);
  add(
    missingProvider.length
      ? { name: 'CUDA execution provider', status: 'missing', detail: `${missingProvider.join(', ')} not in ${binDir}`, fix: 'npx genqueue install-cuda (fetches it once with npm; after every npm ci it only relinks)' }
      : { name: 'CUDA execution provider', status: 'ok', detail: binDir },
  );

  library('libnvrtc.so.13', 'the device loop compiles its CUDA kernels with NVRTC', "install NVRTC for CUDA 13 (cuda-nvrtc-13-0, or PyTorch's site-packages/nvidia/cu13/lib) on LD_LIBRARY_PATH", true);
  add(
    existsSync(DEVICE_LOOP_ADDON)
      ? { name: 'device-loop addon', status: 'ok', detail: DEVICE_LOOP_ADDON, optional: true }
      : { name: 'device-loop addon', status: 'missing', detail: `${DEVICE_LOOP_ADDON} not built`, fix: 'npm run build:native (needs g++)', optional: true },
  );

  const blockers = checks.filter((c) => c.status === 'missing' && !c.optional);
  if (o.noSession) return checks;
  if (blockers.length) {
    add({ name: `CUDA session on cuda:${o.deviceId}`, status: 'skipped', detail: 'fix the missing items above first' });
    return checks;
  }
  add(await sessionCheck(o.deviceId));
  return checks;
}

/** A real session on the device: a 64×64 MatMul (cuBLAS) created with the CUDA provider alone and run once. */
async function sessionCheck(deviceId: number): Promise<EnvironmentCheck> {
  const name = `CUDA session on cuda:${deviceId}`;
  const g = new GraphBuilder('doctor');
  const x = g.input('x', 'float32', [64, 64]);
  g.op('MatMul', [x, x], [g.output('y', 'float32', [64, 64])]);
  const started = performance.now();
  try {
    const session = await ort.InferenceSession.create(encodeModel(g.build(), 'genqueue-doctor'), { executionProviders: [{ name: 'cuda', deviceId }] });
    try {
      const out = await session.run({ x: new ort.Tensor('float32', new Float32Array(64 * 64).fill(1), [64, 64]) });
      const y = out.y!.data as Float32Array;
      if (y[0] !== 64) return { name, status: 'missing', detail: `the MatMul returned ${y[0]} instead of 64`, fix: 'check the GPU with nvidia-smi; the CUDA libraries may not match the driver' };
    } finally {
      await session.release();
    }
    return { name, status: 'ok', detail: `created and ran in ${((performance.now() - started) / 1000).toFixed(1)} s` };
  } catch (e) {
    return {
      name,
      status: 'missing',
      detail: (e as Error).message.split('\n')[0]!,
      fix: "ONNX Runtime's log above names the library that failed to load; check the CUDA libraries match CUDA 13 and the driver",
    };
  }
}
