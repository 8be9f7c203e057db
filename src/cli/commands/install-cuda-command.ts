import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { CUDA_PROVIDER_PACKAGE, installCudaProvider } from '../../engine/cuda-provider-install.js';
import { defaultCacheDir } from '../../model/model-cache.js';
import { configOption } from '../options.js';

export function registerInstallCudaCommand(program: Command): void {
  const pkg = `${CUDA_PROVIDER_PACKAGE.name}@${CUDA_PROVIDER_PACKAGE.version}`;
  program
    .command('install-cuda')
    .description(`install ONNX Runtime 1.29's CUDA 13 provider for onnxruntime-node (npm ${pkg}, kept in the cache, linked into node_modules)`)
    .option('--from <file.tgz|dir>', `the tarball of \`npm pack ${pkg}\` made elsewhere (digest checked), or a folder with the provider libraries`)
    .addOption(configOption())
    .action(async (o: { from?: string; config?: string }) => {
      const config = loadConfig({ file: o.config });
      const installed = await installCudaProvider({
        cacheDir: config.cacheDir ?? defaultCacheDir(),
        ...(o.from ? { from: o.from } : {}),
        log: (line) => process.stderr.write(`${line}\n`),
      });
      for (const l of installed.linked) process.stdout.write(`${l}\n`);
      process.stderr.write('done: `genqueue doctor` checks the rest (driver, CUDA libraries) and runs a session\n');
    });
}
