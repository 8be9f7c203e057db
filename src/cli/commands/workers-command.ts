import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { resolveModelArg } from '../../model/model-reference.js';
import { assertRedisReachable } from '../../queue/redis-connection.js';
import { type ChildSpec, FleetSupervisor } from '../../worker/fleet-supervisor.js';
import { createLogger } from '../logger.js';
import { nonNegativeInt, positiveInt } from '../options.js';
import { sharedWorkerOptions } from './worker-command.js';

const MAIN = fileURLToPath(new URL('../main.js', import.meta.url));

interface WorkersOptions {
  gpus?: number[];
  cpus?: number;
  perGpu: number;
  metricsPort?: number;
  workerIdPrefix?: string;
  config?: string;
  [shared: string]: unknown;
}

function gpuList(value: string): number[] {
  const ids = value.split(',').map((s) => s.trim());
  if (ids.some((s) => !/^\d+$/.test(s))) throw new InvalidArgumentError('--gpus takes GPU indices, e.g. 0,1,2,3');
  const gpus = ids.map(Number);
  if (new Set(gpus).size !== gpus.length) throw new InvalidArgumentError(`--gpus ${value}: a GPU is listed twice`);
  return gpus;
}

/** One child per (GPU, slot), or per CPU process; names double as worker ids under the prefix. */
export function childSpecs(o: WorkersOptions, forwarded: string[], prefix: string): ChildSpec[] {
  const devices = o.gpus
    ? o.gpus.flatMap((g) => Array.from({ length: o.perGpu }, (_, k) => ({ device: `cuda:${g}`, slot: o.perGpu > 1 ? k : undefined })))
    : Array.from({ length: o.cpus ?? 0 }, (_, k) => ({ device: 'cpu', slot: k as number | undefined }));
  return devices.map(({ device, slot }, i) => {
    const name = `${prefix}:${device}${slot === undefined ? '' : `#${slot}`}`;
    const metrics = o.metricsPort === undefined ? [] : ['--metrics-port', String(o.metricsPort === 0 ? 0 : o.metricsPort + i)];
    return { name, args: [MAIN, 'worker', '--device', device, '--worker-id', name, ...metrics, ...forwarded] };
  });
}

export function registerWorkersCommand(program: Command): void {
  const shared = sharedWorkerOptions();
  const command = program
    .command('workers')
    .description('run and supervise one worker process per GPU (and slot): restart crashed ones, drain all on SIGTERM/SIGINT')
    .addOption(new Option('--gpus <list>', 'GPU indices, e.g. 0,1,2,3: one worker per GPU and slot, pinned with --device cuda:i').argParser(gpuList))
    .addOption(new Option('--cpus <n>', 'instead of GPUs: n worker processes on the CPU').argParser(positiveInt('--cpus')).conflicts('gpus'))
    .option('--per-gpu <k>', 'worker processes per GPU', positiveInt('--per-gpu'), 1)
    .option('--metrics-port <port>', 'first worker serves /metrics on this port, the next on port + 1, … (0: each any free port)', nonNegativeInt('--metrics-port'))
    .option('--worker-id-prefix <p>', 'worker ids are <p>:<device>[#slot] (default: the host name)');
  for (const option of shared) command.addOption(option);
  command.action(async (o: WorkersOptions) => {
    if (!o.gpus && !o.cpus) command.error('error: give --gpus 0,1,… or --cpus N', { exitCode: 2 });
    const config = loadConfig({ file: o.config });
    const logger = createLogger(config.logLevel);
    // A wrong URL or password is one clear error here, not a crash of every child, restarted for ever.
    await assertRedisReachable(config.redisUrl, { logger, tls: config.redisTls, giveUpAfterMs: config.redisConnectTimeoutMs });
    // Resolve (and build) the model once here: a bad --model fails now instead of in a restart loop, and the
    // children find it in the cache instead of building it side by side.
    const modelArg = (o.model as string | undefined) ?? config.defaultModel;
    if (!modelArg) throw new Error('no model: pass --model or set defaultModel in the config (or GENQUEUE_MODEL)');
    await resolveModelArg(modelArg, config, o.precision as 'fp32' | 'fp16' | undefined, undefined, o.gpus ? 'cuda:0' : 'cpu');
    const forwarded = shared.flatMap((opt) => {
      const value = o[opt.attributeName()];
      if (value === undefined) return [];
      return [opt.long!, Array.isArray(value) ? value.join(',') : String(value)];
    });
    const supervisor = new FleetSupervisor({
      command: process.execPath,
      // The config's port (GENQUEUE_METRICS_PORT) is a base too: every child on one port would fail to bind.
      children: childSpecs({ ...o, metricsPort: o.metricsPort ?? config.worker.metricsPort }, forwarded, o.workerIdPrefix ?? hostname()),
      logger,
    });
    const onSignal = (signal: NodeJS.Signals): void => void supervisor.stop(signal);
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    supervisor.start();
    const clean = await supervisor.done;
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    logger.info({ clean }, 'all worker processes exited');
    if (!clean) process.exitCode = 1;
  });
}
