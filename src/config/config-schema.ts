import { z } from 'zod';
import { Attempts, BackoffMs, KeepJobs } from '../queue/job-schema.js';
import { redisUrlProblem } from '../queue/redis-connection.js';

export const ModelEntry = z
  .object({
    /** A Hugging Face checkpoint directory (built on first use) or a built model directory. */
    path: z.string().min(1),
    precision: z.enum(['fp32', 'fp16']).optional(),
  })
  .strict();

export const WorkerSettings = z
  .object({
    /** cpu, cuda:N or tensorrt:N */
    device: z.string().regex(/^(cpu|(cuda|tensorrt)(:\d+)?)$/, 'must be cpu, cuda:N or tensorrt:N'),
    /** Most jobs one graph run carries; each queue may hold twice that many active (GenerationWorker). */
    maxBatch: z.number().int().min(1).max(4096),
    /** How long the first job of a batch waits for company before the batch runs anyway. */
    maxWaitMs: z.number().int().min(0).max(60_000),
    /** auto: fp16 on CUDA (its fast paths, the slot engine among them, are fp16), fp32 on the CPU provider. */
    precision: z.enum(['auto', 'fp32', 'fp16']),
    /**
     * Greedy batches up to this size run through the native device loop (CUDA graph replay; needs
     * `npm run build:native` and an fp16 model on CUDA). 0 keeps every batch on the onnxruntime-node path.
     */
    deviceLoopMaxBatch: z.number().int().min(0).max(4096),
    /**
     * Sequence lengths (prompt + new tokens) the worker runs once at maxBatch (and at deviceLoopMaxBatch when the
     * device loop runs and that is smaller) before it takes jobs, so what a new batch shape costs once (the device
     * loop captures its CUDA graphs) is paid at start-up rather than by the first jobs. Batches round up to a power
     * of two and lengths to 64 positions.
     */
    warmupLengths: z.array(z.number().int().min(2).max(1_000_000)).max(16),
    /**
     * How jobs run. slots: continuous batching on the slot engine (one running batch of `slots` rows; a job joins at
     * the next chunk boundary after a row frees and completes the moment it ends; beam jobs use the search ops).
     * batches: today's batches of up to maxBatch jobs grouped by max_new_tokens. auto: slots where the slot engine
     * can run (native addon built, a model with slot steps, fp16 on CUDA), batches otherwise (with a warning).
     */
    engine: z.enum(['auto', 'slots', 'batches']),
    /** Rows of the slot engine's running batch (default 256 on CUDA, 8 on the CPU provider). */
    slots: z.number().int().min(1).max(4096).optional(),
    /**
     * Prompt + max_new_tokens one slot holds (default: the model's context length, at most 4096: each slot holds its
     * KV cache for all of it); longer jobs fail alone, with both numbers.
     */
    slotCapacity: z.number().int().min(2).max(1_000_000).optional(),
    /** Decode steps between the slot engine's chunk boundaries, where jobs end and join (default 16). */
    chunkSteps: z.number().int().min(1).max(1024).optional(),
    /** Prompt tokens per row in one prefill run of the slot engine (default 512, at most the slot capacity). */
    prefillChunk: z.number().int().min(1).max(1_000_000).optional(),
    /** Joining rows whose first prompt chunks share one prefill run (default 16). */
    prefillRows: z.number().int().min(1).max(4096).optional(),
    /** A job with `stream: true` publishes its text so far as its progress every this many generated tokens. */
    streamEveryTokens: z.number().int().min(1).max(32768),
    /** Shown in results and the dashboard; defaults to host:pid:device. */
    id: z.string().min(1).optional(),
    /**
     * On SIGTERM/SIGINT the active batch runs to its end; after that, BullMQ has this long to record the results
     * in Redis. Past it, the worker lets go of the jobs it still holds (stalled-job recovery returns them to the
     * queue) and exits non-zero.
     */
    shutdownTimeoutMs: z.number().int().min(0).max(3_600_000),
    /**
     * How long a job's lock lasts without renewal (renewed every half of it while the job runs). A killed worker's
     * jobs return to the queue within about lockDurationMs + stalledIntervalMs.
     */
    lockDurationMs: z.number().int().min(1_000).max(600_000),
    /** How often workers look for jobs whose lock expired. */
    stalledIntervalMs: z.number().int().min(500).max(600_000),
    /** Port of the worker's /metrics and /healthz server (0: any free port); none when absent. */
    metricsPort: z.number().int().min(0).max(65535).optional(),
    /** Address that server binds (0.0.0.0 where Prometheus scrapes from another host or container). */
    metricsHost: z.string().min(1),
  })
  .strict();

export const Limits = z
  .object({
    /** Longest prompt, in characters, that a producer enqueues and a worker tokenizes (why 100,000: job-schema.ts). */
    maxPromptChars: z.number().int().min(1).max(1_000_000_000),
  })
  .strict();

/**
 * Absent: a week by age (JobProducer's default). Not in config/default.json, so that a file's setting replaces the
 * default rather than merging into it ({} keeps every job; {"count": 100} keeps the newest 100 whatever their age).
 */
export const RetentionSettings = z.object({ completed: KeepJobs.optional(), failed: KeepJobs.optional() }).strict();

export const JobSettings = z
  .object({
    /** Tries per job; only transient failures (engine or runtime errors) are tried again. */
    attempts: Attempts,
    /** Wait before the first retry; each further retry waits twice as long. */
    backoffMs: BackoffMs,
  })
  .strict();

/** Files a rediss:// connection uses (paths; read when connecting). A plain redis:// URL takes none. */
export const RedisTlsSettings = z
  .object({
    /** PEM CA certificate(s) that signed the server's certificate; replaces Node's trusted roots for Redis. */
    ca: z.string().min(1).optional(),
    /** PEM client certificate and its key, where the server asks for one (tls-auth-clients yes). */
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    /** false accepts any server certificate: it defeats TLS's point, for tests only. */
    rejectUnauthorized: z.boolean().optional(),
  })
  .strict();

/** Everything genqueue reads from config files and the environment. */
export const GenqueueConfig = z
  .object({
    /**
     * redis://[user:password@]host:port[/db] or rediss:// (TLS) for one server; redis+cluster://[user:password@]host:port[,host:port…]
     * or rediss+cluster:// for a Redis Cluster (the nodes a client starts from).
     */
    redisUrl: z.string().superRefine((url, ctx) => {
      const problem = redisUrlProblem(url);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    redisTls: RedisTlsSettings.optional(),
    /**
     * How long a client command (enqueue, results, dashboard, demo, and a worker at start) keeps trying to reach
     * Redis before it gives up with one line saying why; refused credentials give up at once.
     */
    redisConnectTimeoutMs: z.number().int().min(100).max(600_000),
    /** Where built models are cached; defaults to $XDG_CACHE_HOME/genqueue or ~/.cache/genqueue. */
    cacheDir: z.string().min(1).optional(),
    /** Named models a worker or a job can refer to. */
    models: z.record(z.string(), ModelEntry),
    /** The model a worker serves when --model is not given. */
    defaultModel: z.string().optional(),
    worker: WorkerSettings,
    limits: Limits,
    jobs: JobSettings,
    retention: RetentionSettings,
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  })
  .strict();
export type GenqueueConfig = z.infer<typeof GenqueueConfig>;
