/**
 * worker_threads entry: owns one Generator so that ONNX Runtime's long synchronous work never blocks the
 * main thread's event loop (where BullMQ renews job locks and Redis replies are read).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Generator } from './generator.js';
import type { GeneratorOptions } from './generator.js';
import type { ThreadRequest, ThreadResponse } from './generator-thread-protocol.js';

interface ThreadInit {
  readonly modelDir: string;
  readonly options: Omit<GeneratorOptions, 'onWarning'>;
}

const port = parentPort;
if (!port) throw new Error('generator-thread must run inside a worker thread');
const init = workerData as ThreadInit;
const send = (msg: ThreadResponse): void => port.postMessage(msg);

Generator.open(init.modelDir, { ...init.options, onWarning: (message) => send({ type: 'warning', message }) }).then(
  (generator) => {
    send({ type: 'ready', manifest: generator.manifest, device: generator.device });
    const running = new Set<Promise<unknown>>();
    port.on('message', (msg: ThreadRequest) => {
      if (msg.type === 'close') {
        // Sessions are released only once the batches still running have returned.
        void Promise.allSettled(running)
          .then(() => generator.close())
          .finally(() => process.exit(0));
        return;
      }
      const run = generator.generate(msg.requests).then(
        (result) => send({ type: 'result', id: msg.id, result }),
        (e: unknown) => send({ type: 'error', id: msg.id, message: e instanceof Error ? e.message : String(e) }),
      );
      running.add(run);
      void run.finally(() => running.delete(run));
    });
  },
  (e: unknown) => send({ type: 'failed', message: e instanceof Error ? e.message : String(e) }),
);
