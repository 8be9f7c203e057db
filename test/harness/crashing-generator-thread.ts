/**
 * The real generator thread, plus a fault: it announces itself with a warning (so tests count the threads
 * started) and exits at once, with code 70, on a batch whose first prompt is [CRASH_TOKEN].
 */
import { parentPort } from 'node:worker_threads';
import '../../src/engine/generator-thread.js';
import type { ThreadRequest, ThreadResponse } from '../../src/engine/generator-thread-protocol.js';
import { CRASH_TOKEN, STARTED_WARNING } from './thread-faults.js';

parentPort!.postMessage({ type: 'warning', message: STARTED_WARNING } satisfies ThreadResponse);
parentPort!.on('message', (msg: ThreadRequest) => {
  if (msg.type === 'generate' && msg.requests[0]?.promptIds[0] === CRASH_TOKEN) process.exit(70);
});
