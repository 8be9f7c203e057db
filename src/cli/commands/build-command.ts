import { mkdirSync } from 'node:fs';
import type { Command } from 'commander';
import { buildModel } from '../../model/model-builder.js';
import { precisionOption } from '../options.js';

export function registerBuildCommand(program: Command): void {
  program
    .command('build')
    .description('build an ONNX model directory from a Hugging Face checkpoint directory')
    .argument('<hf-dir>', 'checkpoint directory: config.json, model.safetensors (or sharded), tokenizer.json')
    .requiredOption('--out <dir>', 'output directory')
    .addOption(precisionOption())
    .action((hfDir: string, opts: { out: string; precision?: 'fp32' | 'fp16' }) => {
      mkdirSync(opts.out, { recursive: true });
      const manifest = buildModel(hfDir, opts.out, { precision: opts.precision ?? 'fp32' });
      const s = manifest.spec;
      process.stdout.write(
        `built ${manifest.name} (${s.architecture}, ${s.numLayers} layers, ${s.hiddenSize} hidden, ${s.precision}) ` +
          `→ ${opts.out} in ${manifest.buildSeconds.toFixed(1)} s (${manifest.decoderNodes} decoder nodes, ${(manifest.weightBytes / 2 ** 20).toFixed(1)} MiB weights)\n`,
      );
    });
}
