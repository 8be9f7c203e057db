import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { parseRedisUrl, redactUrl } from '../queue/redis-connection.js';
import { GenqueueConfig } from './config-schema.js';

const DEFAULTS_PATH = fileURLToPath(new URL('../../../config/default.json', import.meta.url));

type Json = Record<string, unknown>;

function readJsonObject(path: string): Json {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`config ${path}: ${(e as Error).message}`);
  }
  const parsed = z.record(z.string(), z.unknown()).safeParse(raw);
  if (!parsed.success) throw new Error(`config ${path}: expected a JSON object`);
  return parsed.data;
}

function merge(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? merge(b as Json, v as Json) : v;
  }
  return out;
}

const intFromEnv = (name: string, value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new Error(`environment ${name}=${value}: expected an integer`);
  return n;
};

/** Environment variables that override the file settings. */
function fromEnv(env: NodeJS.ProcessEnv): Json {
  const worker: Json = {};
  if (env.GENQUEUE_DEVICE) worker.device = env.GENQUEUE_DEVICE;
  if (env.GENQUEUE_MAX_BATCH) worker.maxBatch = intFromEnv('GENQUEUE_MAX_BATCH', env.GENQUEUE_MAX_BATCH);
  if (env.GENQUEUE_MAX_WAIT_MS) worker.maxWaitMs = intFromEnv('GENQUEUE_MAX_WAIT_MS', env.GENQUEUE_MAX_WAIT_MS);
  if (env.GENQUEUE_PRECISION) worker.precision = env.GENQUEUE_PRECISION;
  if (env.GENQUEUE_WORKER_ID) worker.id = env.GENQUEUE_WORKER_ID;
  if (env.GENQUEUE_DEVICE_LOOP_MAX_BATCH) worker.deviceLoopMaxBatch = intFromEnv('GENQUEUE_DEVICE_LOOP_MAX_BATCH', env.GENQUEUE_DEVICE_LOOP_MAX_BATCH);
  if (env.GENQUEUE_ENGINE) worker.engine = env.GENQUEUE_ENGINE;
  if (env.GENQUEUE_SLOTS) worker.slots = intFromEnv('GENQUEUE_SLOTS', env.GENQUEUE_SLOTS);
  if (env.GENQUEUE_METRICS_PORT) worker.metricsPort = intFromEnv('GENQUEUE_METRICS_PORT', env.GENQUEUE_METRICS_PORT);
  if (env.GENQUEUE_METRICS_HOST) worker.metricsHost = env.GENQUEUE_METRICS_HOST;
  if (env.GENQUEUE_SHUTDOWN_TIMEOUT_MS) worker.shutdownTimeoutMs = intFromEnv('GENQUEUE_SHUTDOWN_TIMEOUT_MS', env.GENQUEUE_SHUTDOWN_TIMEOUT_MS);
  if (env.GENQUEUE_LOCK_DURATION_MS) worker.lockDurationMs = intFromEnv('GENQUEUE_LOCK_DURATION_MS', env.GENQUEUE_LOCK_DURATION_MS);
  if (env.GENQUEUE_STALLED_INTERVAL_MS) worker.stalledIntervalMs = intFromEnv('GENQUEUE_STALLED_INTERVAL_MS', env.GENQUEUE_STALLED_INTERVAL_MS);
  if (env.GENQUEUE_WARMUP_LENGTHS !== undefined) {
    worker.warmupLengths = env.GENQUEUE_WARMUP_LENGTHS.split(',')
      .filter((s) => s.trim() !== '')
      .map((s) => intFromEnv('GENQUEUE_WARMUP_LENGTHS', s.trim()));
  }
  const limits: Json = {};
  if (env.GENQUEUE_MAX_PROMPT_CHARS) limits.maxPromptChars = intFromEnv('GENQUEUE_MAX_PROMPT_CHARS', env.GENQUEUE_MAX_PROMPT_CHARS);
  const out: Json = { worker, limits };
  if (env.REDIS_URL) out.redisUrl = env.REDIS_URL;
  if (env.GENQUEUE_REDIS_CONNECT_TIMEOUT_MS) {
    out.redisConnectTimeoutMs = intFromEnv('GENQUEUE_REDIS_CONNECT_TIMEOUT_MS', env.GENQUEUE_REDIS_CONNECT_TIMEOUT_MS);
  }
  const tls: Json = {};
  if (env.GENQUEUE_REDIS_TLS_CA) tls.ca = env.GENQUEUE_REDIS_TLS_CA;
  if (env.GENQUEUE_REDIS_TLS_CERT) tls.cert = env.GENQUEUE_REDIS_TLS_CERT;
  if (env.GENQUEUE_REDIS_TLS_KEY) tls.key = env.GENQUEUE_REDIS_TLS_KEY;
  if (Object.keys(tls).length > 0) out.redisTls = tls;
  if (env.GENQUEUE_CACHE_DIR) out.cacheDir = env.GENQUEUE_CACHE_DIR;
  if (env.GENQUEUE_LOG_LEVEL) out.logLevel = env.GENQUEUE_LOG_LEVEL;
  if (env.GENQUEUE_MODEL) out.defaultModel = env.GENQUEUE_MODEL;
  return out;
}

/**
 * Embedded defaults (config/default.json) ← a config file (--config or GENQUEUE_CONFIG) ← environment.
 * Command-line flags are applied by the CLI on top of the result.
 */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv } = {}): GenqueueConfig {
  const env = options.env ?? process.env;
  let merged = readJsonObject(DEFAULTS_PATH);
  const file = options.file ?? env.GENQUEUE_CONFIG;
  if (file) merged = merge(merged, readJsonObject(file));
  merged = merge(merged, fromEnv(env));
  const parsed = GenqueueConfig.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`config${file ? ` ${file}` : ''}: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  // TLS files with a plain URL would leave the traffic in clear while the settings say otherwise.
  if (parsed.data.redisTls && !parseRedisUrl(parsed.data.redisUrl).tls) {
    throw new Error(`config${file ? ` ${file}` : ''}: redisTls is set, but redisUrl ${redactUrl(parsed.data.redisUrl)} is not a TLS URL (rediss:// or rediss+cluster://)`);
  }
  return parsed.data;
}

/** REDIS_URL was set explicitly (by environment or file), as opposed to the embedded default. */
export function redisConfigured(options: { file?: string; env?: NodeJS.ProcessEnv } = {}): boolean {
  const env = options.env ?? process.env;
  if (env.REDIS_URL) return true;
  const file = options.file ?? env.GENQUEUE_CONFIG;
  return file ? 'redisUrl' in readJsonObject(file) : false;
}
