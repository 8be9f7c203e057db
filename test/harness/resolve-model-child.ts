import { statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ModelCache } from '../../src/model/model-cache.js';

/**
 * A process that resolves a checkpoint through the model cache on cue, for the concurrent-build test:
 * prints `ready`, resolves on the line `go` and prints {dir, built}, then on `check` prints whether the
 * directory it got is still the same one (same inode) with every file its manifest names.
 * Usage: node resolve-model-child.js <cacheRoot> <checkpointDir> [lockWaitMs]
 */
const [root, checkpoint, lockWaitMs] = process.argv.slice(2) as [string, string, string?];
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async (): Promise<string | undefined> => (await lines.next()).value as string | undefined;

process.stdout.write('ready\n');
if ((await next()) === 'go') {
  const model = await new ModelCache(root, lockWaitMs ? { lockWaitMs: Number(lockWaitMs) } : undefined).resolve(checkpoint);
  const inode = statSync(model.dir).ino;
  process.stdout.write(`${JSON.stringify({ dir: model.dir, built: model.built })}\n`);
  if ((await next()) === 'check') {
    let intact: boolean;
    try {
      intact = statSync(model.dir).ino === inode && Object.values(model.manifest.files).every((f) => statSync(join(model.dir, f)).isFile());
    } catch {
      intact = false;
    }
    process.stdout.write(`${JSON.stringify({ intact })}\n`);
  }
}
process.exit(0);
