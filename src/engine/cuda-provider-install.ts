import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { copyFileSync, createReadStream, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CUDA_PROVIDER_LIBRARIES, onnxRuntimeBinDir } from './execution-provider.js';

const run = promisify(execFile);

/** An npm package that carries ONNX Runtime's CUDA provider libraries, pinned by version and tarball digest. */
export interface CudaProviderPackage {
  readonly name: string;
  readonly version: string;
  /** npm's `dist.integrity` of the tarball: a download or a given file must match it. */
  readonly integrity: string;
  /** Where the libraries sit inside the tarball. */
  readonly libDir: string;
}

/**
 * ONNX Runtime 1.29.0's CUDA 13 provider (the onnxruntime-node version genqueue pins): the npm package does not
 * ship it and its own postinstall fetches a build from outside npm, so genqueue installs this one.
 */
export const CUDA_PROVIDER_PACKAGE: CudaProviderPackage = {
  name: 'com.github.asus4.onnxruntime.linux-x64-gpu',
  version: '0.4.9',
  integrity: 'sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w==',
  libDir: 'package/Plugins/Linux/x64',
};

/** Linked too when present: `--device tensorrt:N` uses it where TensorRT is installed (else falls back to CUDA). */
const OPTIONAL_LIBRARIES = ['libonnxruntime_providers_tensorrt.so'];

export class CudaProviderInstallError extends Error {
  override readonly name = 'CudaProviderInstallError';
}

export interface InstallCudaProviderOptions {
  /** Root of genqueue's cache: the libraries are kept under <cacheDir>/onnxruntime-cuda/, so a later `npm ci` only relinks. */
  readonly cacheDir: string;
  /**
   * The package tarball (`npm pack <name>@<version>` made elsewhere; checked against the pinned digest), or a
   * directory holding the provider libraries (used as given). Default: `npm pack` from the configured registry.
   */
  readonly from?: string;
  /** Where ONNX Runtime looks for providers (default: onnxruntime-node's native folder). */
  readonly binDir?: string;
  readonly pkg?: CudaProviderPackage;
  readonly log?: (line: string) => void;
}

export interface InstalledCudaProvider {
  /** Where the libraries are kept. */
  readonly store: string;
  /** The links made in binDir. */
  readonly linked: string[];
  /** false when the store already held them (nothing fetched). */
  readonly fetched: boolean;
}

/**
 * Puts ONNX Runtime's CUDA provider where onnxruntime-node loads providers: fetched once into genqueue's cache
 * (or taken from `from`), then linked into onnxruntime-node's native folder. Safe to run again (after `npm ci`
 * replaced node_modules, it only relinks).
 */
export async function installCudaProvider(options: InstallCudaProviderOptions): Promise<InstalledCudaProvider> {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new CudaProviderInstallError(`the CUDA provider package is for linux-x64; this is ${process.platform}-${process.arch}`);
  }
  const pkg = options.pkg ?? CUDA_PROVIDER_PACKAGE;
  const log = options.log ?? (() => undefined);
  const binDir = options.binDir ?? onnxRuntimeBinDir();
  if (!existsSync(binDir)) throw new CudaProviderInstallError(`${binDir} does not exist: is onnxruntime-node installed (npm ci)?`);
  const store = join(options.cacheDir, 'onnxruntime-cuda', `${pkg.name}-${pkg.version}`);
  const fromDir = options.from !== undefined && statSync(options.from).isDirectory();
  let fetched = false;
  if (fromDir || !CUDA_PROVIDER_LIBRARIES.every((f) => existsSync(join(store, f)))) {
    await fillStore(store, pkg, options.from, fromDir, log);
    fetched = true;
  } else {
    log(`using ${store}`);
  }
  const linked: string[] = [];
  for (const f of [...CUDA_PROVIDER_LIBRARIES, ...OPTIONAL_LIBRARIES]) {
    if (!existsSync(join(store, f))) continue;
    linkInto(join(store, f), join(binDir, f));
    linked.push(join(binDir, f));
  }
  log(`linked ${linked.length} librar${linked.length === 1 ? 'y' : 'ies'} into ${binDir}`);
  return { store, linked, fetched };
}

/** Fills the store beside its final place and renames it in, so an interrupted install never leaves half of it. */
async function fillStore(store: string, pkg: CudaProviderPackage, from: string | undefined, fromDir: boolean, log: (l: string) => void): Promise<void> {
  mkdirSync(join(store, '..'), { recursive: true });
  const staging = `${store}.${randomBytes(6).toString('hex')}.tmp`;
  const work = mkdtempSync(join(tmpdir(), 'genqueue-cuda-'));
  try {
    mkdirSync(staging);
    if (fromDir) {
      const missing = CUDA_PROVIDER_LIBRARIES.filter((f) => !existsSync(join(from!, f)));
      if (missing.length) throw new CudaProviderInstallError(`${from}: ${missing.join(', ')} missing`);
      for (const f of [...CUDA_PROVIDER_LIBRARIES, ...OPTIONAL_LIBRARIES]) if (existsSync(join(from!, f))) copyFileSync(join(from!, f), join(staging, f));
      log(`copied the provider libraries from ${from} (not checked against ${pkg.name}@${pkg.version}'s digest)`);
    } else {
      const tarball = from ?? (await npmPack(pkg, work, log));
      const digest = `sha512-${await sha512Base64(tarball)}`;
      if (digest !== pkg.integrity) throw new CudaProviderInstallError(`${tarball} is not ${pkg.name}@${pkg.version} (its sha512 differs from the pinned one)`);
      const members = [...CUDA_PROVIDER_LIBRARIES, ...OPTIONAL_LIBRARIES].map((f) => `${pkg.libDir}/${f}`);
      await run('tar', ['-xzf', tarball, '-C', work, ...members]).catch((e: Error) => {
        throw new CudaProviderInstallError(`could not unpack ${tarball}: ${e.message.split('\n')[0]}`);
      });
      for (const f of readdirSync(join(work, pkg.libDir))) renameSync(join(work, pkg.libDir, f), join(staging, f));
      log(`unpacked ${pkg.name}@${pkg.version} (digest checked)`);
    }
    rmSync(store, { recursive: true, force: true });
    renameSync(staging, store);
  } finally {
    rmSync(staging, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
}

async function npmPack(pkg: CudaProviderPackage, dir: string, log: (l: string) => void): Promise<string> {
  log(`fetching ${pkg.name}@${pkg.version} with npm (about 180 MB, once)`);
  try {
    const { stdout } = await run('npm', ['pack', `${pkg.name}@${pkg.version}`, '--pack-destination', dir, '--json', '--ignore-scripts'], {
      maxBuffer: 16 * 1024 * 1024,
    });
    const [entry] = JSON.parse(stdout) as { filename: string }[];
    if (!entry) throw new Error('npm pack printed no file');
    return join(dir, entry.filename);
  } catch (e) {
    throw new CudaProviderInstallError(
      `npm pack ${pkg.name}@${pkg.version} failed (${(e as Error).message.split('\n')[0]}); on a machine without the registry, run it elsewhere and pass the file with --from`,
    );
  }
}

function sha512Base64(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha512');
    createReadStream(path)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('base64')))
      .on('error', reject);
  });
}

/** A symlink to the stored library (a copy where the file system refuses links); replaces what was there. */
function linkInto(source: string, target: string): void {
  try {
    lstatSync(target);
    unlinkSync(target);
  } catch {
    // nothing there yet
  }
  try {
    symlinkSync(source, target);
  } catch {
    copyFileSync(source, target);
  }
}
