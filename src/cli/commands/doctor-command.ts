import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { checkCudaEnvironment, type EnvironmentCheck } from '../../engine/cuda-environment.js';
import { parseDevice } from '../../engine/execution-provider.js';
import { configOption } from '../options.js';

/** "ok: …", "missing: … — fix: …", "skipped: …": one line per check. */
export function checkLine(c: EnvironmentCheck): string {
  const optional = c.optional ? ' (optional: the device loop)' : '';
  if (c.status === 'ok') return `ok: ${c.name} — ${c.detail}`;
  if (c.status === 'skipped') return `skipped: ${c.name} — ${c.detail}`;
  return `missing${optional}: ${c.name} — ${c.detail} — fix: ${c.fix ?? 'see above'}`;
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('check what --device cuda:N needs (driver, GPU, CUDA 13 libraries, the CUDA provider, NVRTC, the device-loop addon), then run one CUDA session')
    .option('--device <cuda:N>', 'the GPU to check (default: the config device when it is a GPU, else cuda:0)')
    .addOption(configOption())
    .action(async (o: { device?: string; config?: string }) => {
      const config = loadConfig({ file: o.config });
      const device = parseDevice(o.device ?? (config.worker.device === 'cpu' ? 'cuda:0' : config.worker.device));
      if (device.kind === 'cpu') throw new Error('doctor checks a GPU: pass --device cuda:N');
      const checks = await checkCudaEnvironment({ deviceId: device.deviceId });
      for (const c of checks) process.stdout.write(`${checkLine(c)}\n`);
      const failed = checks.filter((c) => c.status === 'missing' && !c.optional);
      process.stdout.write(failed.length ? `${failed.length} problem(s): --device cuda:${device.deviceId} will not work until they are fixed\n` : `--device cuda:${device.deviceId} is ready\n`);
      if (checks.some((c) => c.status !== 'ok' && !c.optional)) process.exitCode = 1;
    });
}
