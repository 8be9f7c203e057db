/**
 * Starts a worker on a model whose warm-up fails, prints the error and returns without exiting: the process
 * ends by itself only if startWorker released everything it had opened.
 * Usage: node start-worker-child.js <builtModelDir> <warmupLength>
 */
import { pino } from 'pino';
import { loadConfig } from '../../src/config/load-config.js';
import { readManifest } from '../../src/model/manifest.js';
import { startWorker } from '../../src/worker/worker-process.js';

const [dir, length] = process.argv.slice(2) as [string, string];
try {
  await startWorker(loadConfig({}), { dir, manifest: readManifest(dir), built: false, name: 'child' }, { device: 'cpu', maxBatch: 2, warmupLengths: [Number(length)] }, pino({ level: 'silent' }));
  process.stdout.write('started\n');
} catch (e) {
  process.stdout.write(`failed: ${(e as Error).message.split('\n')[0]}\n`);
}
