/**
 * worker_threads entry: owns one SlotEngine, so that its chunks of decode steps never block the main thread's
 * event loop (BullMQ's lock renewal, Redis replies). Events of one chunk boundary go back as one message.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SlotEngine } from './slot-engine.js';
import type { SlotThreadEvent, SlotThreadInit, SlotThreadRequest, SlotThreadResponse } from './slot-thread-protocol.js';
import type { SlotHandle } from './slot-types.js';

const port = parentPort;
if (!port) throw new Error('slot-thread must run inside a worker thread');
const init = workerData as SlotThreadInit;
const send = (msg: SlotThreadResponse): void => port.postMessage(msg);

let events: SlotThreadEvent[] = [];
const flush = (): void => {
  if (events.length === 0) return;
  send({ type: 'events', events });
  events = [];
};
// The engine calls back synchronously for every row of a chunk; one flush after the chunk sends them together.
const emit = (event: SlotThreadEvent): void => {
  if (events.length === 0) queueMicrotask(flush);
  events.push(event);
};

let engine: SlotEngine;
try {
  engine = SlotEngine.open(init.modelDir, { ...init.options, onWarning: (message) => send({ type: 'warning', message }) });
} catch (e) {
  send({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
  process.exit(0);
}
send({ type: 'ready', limits: engine.limits, device: engine.device });

const handles = new Map<number, SlotHandle>();
port.on('message', (msg: SlotThreadRequest) => {
  switch (msg.type) {
    case 'submit':
      for (const { id, request } of msg.requests) {
        try {
          handles.set(
            id,
            engine.submit(request, {
              onTokens: (tokens) => emit({ id, tokens: [...tokens] }),
              onDone: (result) => {
                handles.delete(id);
                emit({ id, result });
              },
              onError: (error) => {
                handles.delete(id);
                emit({ id, error: { name: error.name, message: error.message } });
              },
            }),
          );
        } catch (e) {
          const error = e instanceof Error ? e : new Error(String(e));
          emit({ id, error: { name: error.name, message: error.message } });
        }
      }
      break;
    case 'end': {
      const handle = handles.get(msg.id);
      if (msg.reason === 'stop') handle?.finish();
      else handle?.cancel();
      break;
    }
    case 'stats':
      void engine.stats().then((stats) => send({ type: 'stats', id: msg.id, stats }));
      break;
    case 'close':
      void engine.close().then(() => {
        flush();
        process.exit(0);
      });
      break;
  }
});
