import type { SlotEngineOptions } from './slot-engine.js';
import type { SlotEngineLimits, SlotRequest, SlotResult, SlotStats } from './slot-types.js';

/** workerData of a slot thread. */
export interface SlotThreadInit {
  readonly modelDir: string;
  readonly options: Omit<SlotEngineOptions, 'onWarning'>;
}

/** Main thread → slot thread. Request ids are the main thread's. */
export type SlotThreadRequest =
  | { type: 'submit'; requests: { id: number; request: SlotRequest }[] }
  | { type: 'end'; id: number; reason: 'stop' | 'cancelled' }
  | { type: 'stats'; id: number }
  | { type: 'close' };

/** What happened to one request; a chunk boundary's events travel as one message. */
export type SlotThreadEvent =
  | { id: number; tokens: number[] }
  | { id: number; result: SlotResult }
  | { id: number; error: { name: string; message: string } };

/** Slot thread → main thread. */
export type SlotThreadResponse =
  | { type: 'ready'; limits: SlotEngineLimits; device: string }
  | { type: 'failed'; message: string }
  | { type: 'warning'; message: string }
  | { type: 'events'; events: SlotThreadEvent[] }
  | { type: 'stats'; id: number; stats: SlotStats };
