import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { z } from 'zod';
import { CHECKPOINT_FILES } from './hf-checkpoint.js';

/**
 * Models by hub id (`owner/name[@revision]`): the files genqueue reads (config, tokenizer, safetensors) are
 * downloaded with @huggingface/hub into the shared Hugging Face cache layout, so Python tools and genqueue
 * keep one copy:
 *   <cache>/models--owner--name/blobs/<etag>                   file contents (etag: sha256 for LFS files, git oid else)
 *   <cache>/models--owner--name/snapshots/<commit>/<file>       relative symlinks to the blobs
 *   <cache>/models--owner--name/refs/<revision>                the commit the revision pointed to
 * Honours HF_ENDPOINT, HF_TOKEN (or the token file), HF_HUB_OFFLINE and HF_HUB_CACHE / HF_HOME.
 */

export interface HubReference {
  /** owner/name */
  readonly repo: string;
  readonly revision: string;
}

const HUB_ID = /^([A-Za-z0-9][\w.-]{0,95})\/([A-Za-z0-9][\w.-]{0,95})(?:@([\w.\-/]{1,255}))?$/;

/** `owner/name` or `owner/name@revision` (a branch, tag or commit); undefined for anything else. */
export function parseHubReference(text: string): HubReference | undefined {
  const m = HUB_ID.exec(text);
  if (!m || text.includes('--') || text.includes('..')) return undefined;
  return { repo: `${m[1]}/${m[2]}`, revision: m[3] ?? 'main' };
}

/** The name jobs use for a model given by hub id: the repository's name, as a directory's basename is for a path. */
export function hubModelName(ref: HubReference): string {
  return ref.repo.split('/')[1]!;
}

/** Raised when a hub model can be neither found in the cache nor downloaded; the message is one line with the way out. */
export class HubModelUnavailableError extends Error {
  override readonly name = 'HubModelUnavailableError';
}

const isTrue = (v: string | undefined): boolean => ['1', 'ON', 'YES', 'TRUE'].includes((v ?? '').toUpperCase());

function hfHome(env: NodeJS.ProcessEnv): string {
  return env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
}

/** The hub cache folder Python's huggingface_hub uses: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. */
export function hfHubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE ?? join(hfHome(env), 'hub');
}

function hfToken(env: NodeJS.ProcessEnv): string | undefined {
  const fromEnv = env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv) return fromEnv.trim();
  try {
    return readFileSync(env.HF_TOKEN_PATH ?? join(hfHome(env), 'token'), 'utf8').trim() || undefined;
  } catch {
    return undefined; // no token file: anonymous
  }
}

export interface HubDownloadOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Called as bytes arrive (default: a progress line on stderr when it is a terminal). */
  readonly onProgress?: (file: string, done: number, total: number) => void;
  /** One-line notes (the cache used while the hub is unreachable, a download resumed); default: stderr. */
  readonly log?: (line: string) => void;
  /** For tests: the fetch the hub library uses. */
  readonly fetch?: typeof fetch;
}

/** The files of a checkpoint directory genqueue reads; the weights are added from what the repository holds. */
const SMALL_FILES = [
  CHECKPOINT_FILES.config,
  CHECKPOINT_FILES.generationConfig,
  CHECKPOINT_FILES.tokenizer,
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'chat_template.json',
];
const REQUIRED = [CHECKPOINT_FILES.config, CHECKPOINT_FILES.tokenizer];
const SINGLE_WEIGHTS = CHECKPOINT_FILES.weights;

const WeightIndex = z.object({ weight_map: z.record(z.string(), z.string()) });

function notAvailable(ref: HubReference, cache: string, why: string): HubModelUnavailableError {
  return new HubModelUnavailableError(
    `${ref.repo}@${ref.revision}: ${why}, and it is not in the Hugging Face cache (${cache}); download it where the hub is reachable (the same cache folder then works offline), or copy a checkpoint directory (config.json, tokenizer.json, *.safetensors) to this machine and name it in the config: "models": {"${hubModelName(ref)}": {"path": "/path/to/checkpoint"}}`,
  );
}

/** A snapshot folder of the revision in the cache that holds every file genqueue needs, or undefined. */
export function cachedSnapshot(ref: HubReference, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const storage = join(hfHubCacheDir(env), repoFolder(ref));
  let commit = ref.revision;
  if (!/^[0-9a-f]{40}$/.test(commit)) {
    try {
      commit = readFileSync(join(storage, 'refs', ref.revision), 'utf8').trim();
    } catch {
      return undefined;
    }
  }
  const snapshot = join(storage, 'snapshots', commit);
  if (!REQUIRED.every((f) => existsSync(join(snapshot, f)))) return undefined;
  if (existsSync(join(snapshot, SINGLE_WEIGHTS))) return snapshot;
  const index = join(snapshot, CHECKPOINT_FILES.weightsIndex);
  if (!existsSync(index)) return undefined;
  try {
    const shards = new Set(Object.values(WeightIndex.parse(JSON.parse(readFileSync(index, 'utf8'))).weight_map));
    return [...shards].every((s) => existsSync(join(snapshot, s))) ? snapshot : undefined;
  } catch {
    return undefined;
  }
}

function repoFolder(ref: HubReference): string {
  return `models--${ref.repo.replace('/', '--')}`;
}

/**
 * The checkpoint directory for a hub model: the cached snapshot when complete and the hub cannot or need not be
 * asked (HF_HUB_OFFLINE, or the hub unreachable), else the revision's files downloaded (resuming partial ones).
 */
export async function downloadHubModel(ref: HubReference, options: HubDownloadOptions = {}): Promise<string> {
  const env = options.env ?? process.env;
  const cache = hfHubCacheDir(env);
  const log = options.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  if (isTrue(env.HF_HUB_OFFLINE)) {
    const cached = cachedSnapshot(ref, env);
    if (cached) return cached;
    throw notAvailable(ref, cache, 'HF_HUB_OFFLINE is set');
  }
  const hub = await import('@huggingface/hub');
  const token = hfToken(env);
  const common = {
    ...(env.HF_ENDPOINT ? { hubUrl: env.HF_ENDPOINT.replace(/\/+$/, '') } : {}),
    ...(token ? { accessToken: token } : {}),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  };
  let commit: string;
  try {
    const info = await hub.modelInfo({ ...common, name: ref.repo, revision: ref.revision, additionalFields: ['sha'] });
    if (typeof info.sha !== 'string' || !/^[0-9a-f]{40}$/.test(info.sha)) throw new Error(`the hub gave no commit for ${ref.revision}`);
    commit = info.sha;
  } catch (e) {
    const reason = hubErrorReason(e, Boolean(token));
    const cached = cachedSnapshot(ref, env);
    if (cached) {
      log(`${ref.repo}@${ref.revision}: ${reason}; using the cached snapshot ${cached}`);
      return cached;
    }
    throw notAvailable(ref, cache, reason);
  }

  const storage = join(cache, repoFolder(ref));
  const snapshot = join(storage, 'snapshots', commit);
  if (ref.revision !== commit) {
    mkdirSync(join(storage, 'refs', dirname(ref.revision)), { recursive: true });
    writeFileSync(join(storage, 'refs', ref.revision), commit);
  }
  const entries = new Map<string, { size: number; etag: string; sha256?: string }>();
  for await (const e of hub.listFiles({ ...common, repo: ref.repo, revision: commit })) {
    if (e.type !== 'file') continue;
    const etag = e.lfs?.oid ?? e.oid;
    if (etag) entries.set(e.path, { size: e.lfs?.size ?? e.size, etag, ...(e.lfs ? { sha256: e.lfs.oid } : {}) });
  }
  for (const f of REQUIRED) if (!entries.has(f)) throw new HubModelUnavailableError(`${ref.repo}@${ref.revision} has no ${f}, which genqueue needs`);

  const fetchFile = async (path: string): Promise<void> => {
    const entry = entries.get(path)!;
    const target = join(snapshot, path);
    if (existsSync(target)) return;
    const blob = join(storage, 'blobs', entry.etag);
    mkdirSync(dirname(blob), { recursive: true });
    if (!existsSync(blob)) await downloadBlob(hub, common, ref.repo, commit, path, entry, blob, options, log);
    mkdirSync(dirname(target), { recursive: true });
    try {
      symlinkSync(relative(dirname(target), blob), target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  };

  for (const f of SMALL_FILES) if (entries.has(f)) await fetchFile(f);
  if (entries.has(SINGLE_WEIGHTS)) await fetchFile(SINGLE_WEIGHTS);
  else if (entries.has(CHECKPOINT_FILES.weightsIndex)) {
    await fetchFile(CHECKPOINT_FILES.weightsIndex);
    const index = WeightIndex.parse(JSON.parse(readFileSync(join(snapshot, CHECKPOINT_FILES.weightsIndex), 'utf8')));
    for (const shard of new Set(Object.values(index.weight_map))) {
      if (!entries.has(shard)) throw new HubModelUnavailableError(`${ref.repo}@${ref.revision}: ${shard}, named by its weight index, is not in the repository`);
      await fetchFile(shard);
    }
  } else {
    throw new HubModelUnavailableError(`${ref.repo}@${ref.revision} has no safetensors weights (${SINGLE_WEIGHTS} or ${CHECKPOINT_FILES.weightsIndex}); genqueue reads safetensors only`);
  }
  return snapshot;
}

function hubErrorReason(e: unknown, hasToken: boolean): string {
  const status = (e as { statusCode?: number }).statusCode;
  if (status === 401 || status === 403) return hasToken ? `the hub refused the token (HTTP ${status})` : `the hub needs a token (HTTP ${status}): set HF_TOKEN`;
  if (status === 404) return 'no such model or revision on the hub';
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return `the hub could not be reached (${cause?.code ?? cause?.message ?? (e as Error).message})`;
}

type Hub = typeof import('@huggingface/hub');
type Common = { hubUrl?: string; accessToken?: string; fetch?: typeof fetch };

/** How long a download lock may go untouched before another process takes the download over. */
const STALE_LOCK_MS = 60_000;

/**
 * Downloads one blob into <blob>.incomplete, continuing from its size when an earlier attempt was cut, checks
 * its size (and sha256 for LFS files) and renames it into place. A lock folder beside it makes concurrent
 * workers wait for one download instead of writing the same file.
 */
async function downloadBlob(
  hub: Hub,
  common: Common,
  repo: string,
  commit: string,
  path: string,
  entry: { size: number; sha256?: string },
  blob: string,
  options: HubDownloadOptions,
  log: (l: string) => void,
): Promise<void> {
  const lock = `${blob}.lock`;
  while (!tryLock(lock)) {
    if (existsSync(blob)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  try {
    if (existsSync(blob)) return;
    const partial = `${blob}.incomplete`;
    let offset = existsSync(partial) ? statSync(partial).size : 0;
    if (offset > entry.size) {
      rmSync(partial);
      offset = 0;
    }
    if (offset > 0) log(`${repo}: resuming ${path} at ${offset} of ${entry.size} bytes`);
    const progress = options.onProgress ?? terminalProgress();
    if (offset < entry.size) {
      const file = await hub.downloadFile({ ...common, repo, path, revision: commit, xet: false });
      if (!file) throw new HubModelUnavailableError(`${repo}@${commit}: ${path} is listed but cannot be downloaded`);
      let touched = Date.now();
      const body = Readable.fromWeb((offset > 0 ? file.slice(offset) : file).stream() as WebReadableStream);
      await appendBody(body, partial, (done) => {
        progress(path, offset + done, entry.size);
        if (Date.now() - touched > 5_000) {
          touched = Date.now();
          utimesSync(lock, new Date(), new Date());
        }
      });
    }
    const size = statSync(partial).size;
    if (size !== entry.size) {
      rmSync(partial);
      throw new HubModelUnavailableError(`${repo}: ${path} arrived with ${size} bytes instead of ${entry.size}; run again to download it anew`);
    }
    if (entry.sha256 && (await sha256File(partial)) !== entry.sha256) {
      rmSync(partial);
      throw new HubModelUnavailableError(`${repo}: ${path} does not match its sha256 ${entry.sha256}; run again to download it anew`);
    }
    renameSync(partial, blob);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/**
 * Appends a response body to a file. When the connection breaks, every byte received is still written before
 * the error is passed on, so the next attempt resumes exactly where this one stopped.
 */
async function appendBody(body: Readable, path: string, onBytes: (done: number) => void): Promise<void> {
  const out = createWriteStream(path, { flags: 'a' });
  let writeError: Error | undefined;
  out.on('error', (e) => (writeError = e));
  let done = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (writeError) throw writeError;
      done += chunk.length;
      onBytes(done);
      if (!out.write(chunk)) await once(out, 'drain');
    }
  } finally {
    await new Promise<void>((resolve) => out.end(() => resolve()));
  }
  if (writeError) throw writeError;
}

function tryLock(lock: string): boolean {
  try {
    mkdirSync(lock);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    try {
      if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) rmSync(lock, { recursive: true, force: true }); // its holder died
    } catch {
      // removed meanwhile: try again
    }
    return false;
  }
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** A one-line progress display on stderr when it is a terminal (nothing in logs or pipes). */
function terminalProgress(): (file: string, done: number, total: number) => void {
  if (!process.stderr.isTTY) return () => undefined;
  let last = 0;
  return (file, done, total) => {
    const now = Date.now();
    if (now - last < 200 && done < total) return;
    last = now;
    const mb = (n: number): string => (n / 1_048_576).toFixed(1);
    process.stderr.write(`\r${file}: ${mb(done)} / ${mb(total)} MB (${total ? Math.floor((100 * done) / total) : 100}%)${done >= total ? '\n' : ''}`);
  };
}
