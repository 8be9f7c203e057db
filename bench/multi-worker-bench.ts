import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { createRedisConnection } from '../src/queue/redis-connection.js';
import { RedisServerProcess } from '../src/queue/redis-server-process.js';
import { ResultCollector } from '../src/queue/result-collector.js';
import { readFleet } from '../src/worker/fleet-heartbeat.js';
import type { BenchRow, BenchShape } from './bench-types.js';
import { gpuMemoryByPid } from './gpu-memory.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export interface MultiWorkerOptions {
  /** Checkpoint or built model directory (build it beforehand so the workers do not race to build). */
  readonly model: string;
  readonly cacheDir: string;
  /** One worker process per entry (e.g. ["cuda:0", "cuda:0", "cuda:1"]). */
  readonly devices: readonly string[];
  readonly precision: 'fp32' | 'fp16';
  /** Jobs to serve (default: 2 batches per worker). */
  readonly jobs?: number;
  readonly batch: number;
  readonly shape: BenchShape;
  readonly label: string;
}

/**
 * Real `genqueue worker` processes (one per entry of devices, so several per GPU or one per GPU) on one private
 * redis-server: checks they all start, fit and serve, and records throughput and each worker's GPU memory
 * (peak seen by nvidia-smi while they ran).
 */
export async function multiWorkerRow(o: MultiWorkerOptions): Promise<BenchRow> {
  const redis = await RedisServerProcess.start();
  const env = { ...process.env, REDIS_URL: redis.url, GENQUEUE_CACHE_DIR: o.cacheDir, GENQUEUE_LOG_LEVEL: 'warn' };
  const children: ChildProcess[] = [];
  const peak = new Map<number, number>();
  const poll = setInterval(() => {
    for (const [pid, mib] of gpuMemoryByPid()) peak.set(pid, Math.max(peak.get(pid) ?? 0, mib));
  }, 500);
  const connection = createRedisConnection(redis.url);
  try {
    const workers = o.devices.length;
    for (const [i, device] of o.devices.entries()) {
      children.push(
        spawn(
          process.execPath,
          [CLI, 'worker', '--model', o.model, '--device', device, '--precision', o.precision, '--max-batch', String(o.batch), '--max-wait-ms', '200', '--worker-id', `${o.label}-${i}`],
          { env, stdio: ['ignore', 'ignore', 'inherit'] },
        ),
      );
    }
    // Time the serving, not the loading: wait until every worker has announced itself.
    const readyBy = Date.now() + 300_000;
    while ((await readFleet(connection)).filter((m) => m.workerId.startsWith(`${o.label}-`)).length < workers) {
      if (Date.now() > readyBy) throw new Error(`${o.label}: workers did not start within 5 minutes`);
      if (children.some((c) => c.exitCode !== null)) throw new Error(`${o.label}: a worker exited during start-up`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const newTokens = o.shape.totalTokens - o.shape.promptTokens;
    const count = o.jobs ?? workers * o.batch * 2;
    const jobs = Array.from({ length: count }, (_, i) =>
      jobFromFields({ id: `${o.label}-${i}`, prompt: 'Here is some text to encode Hello World', max_new_tokens: newTokens, min_new_tokens: newTokens }),
    );
    const producer = new JobProducer({ connection });
    const t0 = performance.now();
    const placed = await producer.enqueueJobs(jobs);
    await producer.close();
    let tokens = 0;
    let failed = 0;
    const servedBy = new Set<string>();
    for await (const r of new ResultCollector({ connection }).collect(placed, { wait: true, timeoutMs: 540_000 })) {
      if (r.status === 'completed') {
        tokens += r.result.tokenIds.length;
        servedBy.add(r.result.timings.workerId);
      } else failed++;
    }
    const seconds = (performance.now() - t0) / 1000;
    const mem = children.map((c) => peak.get(c.pid ?? -1) ?? 0);
    return {
      name: o.label,
      batch: o.batch,
      status: failed || servedBy.size < workers ? 'failed' : 'ok',
      secondsPerBatch: seconds / (count / o.batch),
      newTokensPerSecond: tokens / seconds,
      jobsPerSecond: count / seconds,
      precision: o.precision,
      promptTokens: o.shape.promptTokens,
      totalTokens: o.shape.totalTokens,
      gpuMemoryMiB: Math.max(...mem),
      variant: { workers, devices: [...new Set(o.devices)].join('+') },
      note:
        `${workers} worker processes on ${[...new Set(o.devices)].join(', ')} served ${count} jobs (${servedBy.size} workers answered); peak GPU memory per worker ` +
        `${mem.map((m) => `${m} MiB`).join(', ')}; ${seconds.toFixed(1)} s, model build/load excluded` +
        (failed ? `; ${failed} jobs failed` : ''),
    };
  } finally {
    clearInterval(poll);
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    await connection.quit();
    await redis.stop();
  }
}
