/** Jobs without a model go to the shared queue, served by every worker with its default model. */
export const DEFAULT_QUEUE = 'genqueue';

/** Jobs naming a model go to that model's queue, served only by workers that loaded it. */
export function queueNameFor(model: string | undefined): string {
  return model ? `${DEFAULT_QUEUE}.${model}` : DEFAULT_QUEUE;
}

/** Whether a BullMQ queue name is one of genqueue's (the shared queue or a model's). */
export function isGenqueueQueue(name: string): boolean {
  return name === DEFAULT_QUEUE || (name.startsWith(`${DEFAULT_QUEUE}.`) && !name.includes(':'));
}

/** BullMQ's own default: every key genqueue writes begins with the prefix, `bull` unless another is chosen. */
export const DEFAULT_PREFIX = 'bull';

/** Whether a key (or prefix) carries a Redis Cluster hash tag: a non-empty `{…}`, which alone decides its slot. */
export function hasHashTag(key: string): boolean {
  const open = key.indexOf('{');
  return open >= 0 && key.indexOf('}', open + 1) > open + 1;
}

/**
 * The key prefix genqueue uses on a connection. In a Redis Cluster it is hash-tagged (`bull` becomes `{bull}`):
 * BullMQ's scripts touch several keys of a queue at once and genqueue pipelines across queues, so every key under
 * one prefix must lie in one slot. Idempotent, so a prefix resolved once may be resolved again.
 */
export function keyPrefix(connection: { readonly isCluster: boolean }, prefix: string = DEFAULT_PREFIX): string {
  return connection.isCluster && !hasHashTag(prefix) ? `{${prefix}}` : prefix;
}

// Every key genqueue reads or writes, built here and nowhere else. BullMQ's keys of a queue are
// `<prefix>:<queue>:<suffix>` and a job's hash `<prefix>:<queue>:<id>`; genqueue's own keys sit under the same
// prefix (so a Cluster keeps them in the same slot) with a first segment that no genqueue queue name has.

/** A BullMQ key of a queue (`events`, `meta`, `wait`, …). */
export function queueKey(prefix: string, queue: string, suffix: string): string {
  return `${prefix}:${queue}:${suffix}`;
}

/** A job's BullMQ hash. */
export function jobKey(prefix: string, queue: string, id: string): string {
  return `${prefix}:${queue}:${id}`;
}

/**
 * A queue's cancellations: beside BullMQ's keys of that queue, so obliterating the queue drops it too. Job ids never
 * contain ":", so no job's key is this one.
 */
export function cancelMarksKey(prefix: string, queue: string): string {
  return queueKey(prefix, queue, 'genqueue:cancelled');
}

/** A worker's heartbeat (its identity and counters, with a TTL). */
export function fleetMemberKey(prefix: string, workerId: string): string {
  return `${prefix}:genqueue-fleet:${workerId}`;
}

/** The set of the ids of workers that have beaten. */
export function fleetIndexKey(prefix: string): string {
  return `${prefix}:genqueue-fleet-index`;
}

/** One minute's throughput hash (`tokens:<worker>`, `jobs:<worker>` → count). */
export function throughputKey(prefix: string, minuteStart: number): string {
  return `${prefix}:genqueue-throughput:${minuteStart}`;
}

/** The lines of one `enqueue` run's jobs, read when a later line conflicts with one of them. */
export function enqueueLinesKey(prefix: string, runId: string): string {
  return `${prefix}:genqueue-enqueue-lines:${runId}`;
}
