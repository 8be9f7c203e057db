import { InvalidArgumentError, Option } from 'commander';
import { RECHECK_MS } from '../queue/result-collector.js';

export function positiveInt(name: string): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
    return n;
  };
}

export function positiveIntList(name: string): (value: string) => number[] {
  const one = positiveInt(name);
  return (value: string) => value.split(',').filter((s) => s.trim() !== '').map((s) => one(s.trim()));
}

export function nonNegativeInt(name: string): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    return n;
  };
}

export function precisionOption(): Option {
  return new Option('--precision <p>', 'weights and activations precision').choices(['fp32', 'fp16']);
}

export function deviceOption(): Option {
  return new Option('--device <device>', 'cpu, cuda:N or tensorrt:N (TensorRT falls back to CUDA when unavailable)');
}

export function configOption(): Option {
  return new Option('--config <file>', 'JSON config file (defaults: config/default.json; env GENQUEUE_CONFIG)');
}

/** --recheck-ms of the commands that wait for results (ResultCollector's recheckMs). */
export function recheckOption(): Option {
  return new Option(
    '--recheck-ms <ms>',
    `with --wait, how often job states are re-read to find vanished jobs and missed events (default ${RECHECK_MS}, more for many jobs)`,
  ).argParser(positiveInt('--recheck-ms'));
}
