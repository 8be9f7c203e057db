import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DeviceLoopRunner, loadDeviceLoopAddon } from '../../src/engine/device-loop-runner.js';
import { readManifest } from '../../src/model/manifest.js';
import { greedyRequest } from './requests.js';

/**
 * Run with --expose-gc as `node device-loop-lifetime.js <builtModelDir>`: opens and drops device loops in the
 * ways a process does (failing opens, double close, a handle dropped without close, worker threads that exit
 * or are terminated holding one) and prints one JSON line of the addon's live-loop counts after each.
 */
const CPU = { kind: 'cpu' } as const;
const liveLoops = (): number => (loadDeviceLoopAddon() as unknown as { resourceCounts(): { loops: number } }).resourceCounts().loops;

/** Collects garbage until the handle finalizers (which run after a GC, on a later turn) have released the loops. */
async function settle(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  for (let i = 0; i < 50 && liveLoops() > 0; i++) {
    gc();
    await nextTurn();
  }
  return liveLoops();
}

function openLoop(dir: string): DeviceLoopRunner {
  return DeviceLoopRunner.open(dir, readManifest(dir), { device: CPU });
}

/** A worker thread's part: opens a loop, runs it once and never closes it. */
async function inWorker(dir: string): Promise<void> {
  openLoop(dir).run([greedyRequest([464], 2)]);
  parentPort!.postMessage('opened');
  if ((workerData as { stay: boolean }).stay) await new Promise(() => {}); // until terminated
}

async function workerRun(dir: string, stay: boolean): Promise<void> {
  const worker = new Worker(new URL(import.meta.url), { argv: [dir], workerData: { stay } });
  await new Promise<void>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('message', () => resolve());
  });
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  if (stay) await worker.terminate();
  await exited;
}

async function main(dir: string): Promise<void> {
  const counts: Record<string, number> = {};
  const bad = join(dir, 'not-a-model.onnx');
  writeFileSync(bad, 'not an ONNX model');
  const manifest = readManifest(dir);
  for (let i = 0; i < 20; i++) {
    try {
      DeviceLoopRunner.open(dir, { ...manifest, files: { ...manifest.files, deviceLoopCpu: 'not-a-model.onnx' } }, { device: CPU });
      throw new Error('opening a bad step file succeeded');
    } catch (e) {
      if ((e as Error).message === 'opening a bad step file succeeded') throw e;
    }
  }
  counts.afterFailedOpens = liveLoops();
  const twice = openLoop(dir);
  twice.close();
  twice.close();
  counts.afterDoubleClose = liveLoops();
  openLoop(dir);
  counts.droppedBeforeGc = liveLoops();
  counts.droppedAfterGc = await settle();
  await workerRun(dir, false);
  counts.afterWorkerExit = liveLoops();
  await workerRun(dir, true);
  counts.afterWorkerTerminate = liveLoops();
  process.stdout.write(`${JSON.stringify(counts)}\n`);
}

if (isMainThread) await main(process.argv[2]!);
else await inWorker(process.argv[2]!);
