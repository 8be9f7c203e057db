import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { BuildLock } from './build-lock.js';
import { isHfCheckpointDir, openHfCheckpoint } from './checkpoint/hf-checkpoint.js';
import { BUILDER_VERSION, MANIFEST_FILE, type ModelManifest, readManifest } from './manifest.js';
import { buildModel } from './model-builder.js';
import type { FloatPrecision } from './onnx/tensor-types.js';

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.GENQUEUE_CACHE_DIR ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'genqueue');
}

export interface ResolvedModel {
  readonly dir: string;
  readonly manifest: ModelManifest;
  /** true when this call built it (a cache miss). */
  readonly built: boolean;
}

export interface ModelCacheOptions {
  /** How long to wait for another process's build of the same model before building it too. */
  readonly lockWaitMs: number;
}

const HashMemo = z.record(z.string(), z.object({ size: z.number(), mtimeMs: z.number(), sha256: z.string() }));

/**
 * Built models, keyed by a SHA-256 over the builder version, the build options and the checkpoint's files,
 * so a second start reuses the build and any change to the weights or the builder rebuilds it.
 * File digests are memoised by (path, size, mtime) so that a warm start does not re-read gigabytes.
 */
export class ModelCache {
  constructor(
    readonly root: string = defaultCacheDir(),
    private readonly options: ModelCacheOptions = { lockWaitMs: 15 * 60_000 },
  ) {}

  /** A built model directory as is, or a Hugging Face checkpoint directory built on first use. */
  async resolve(source: string, precision: FloatPrecision = 'fp32', name?: string): Promise<ResolvedModel> {
    const dir = resolve(source);
    if (existsSync(join(dir, MANIFEST_FILE))) return { dir, manifest: readManifest(dir), built: false };
    if (!isHfCheckpointDir(dir)) throw new Error(`${source}: neither a built model (${MANIFEST_FILE}) nor a Hugging Face checkpoint (config.json)`);
    const key = await this.keyFor(dir, precision);
    const models = join(this.root, 'models');
    const target = join(models, key.slice(0, 24));
    const cached = (): ResolvedModel | undefined => {
      const manifest = builtManifest(target, key);
      return manifest && { dir: target, manifest, built: false };
    };
    const hit = cached();
    if (hit) return hit;
    mkdirSync(models, { recursive: true });
    // Another process building the same model: wait for it rather than build twice.
    const lock = await BuildLock.acquire(`${target}.lock`, () => cached() !== undefined, this.options.lockWaitMs);
    try {
      const winner = cached();
      if (winner) return winner;
      // Build beside the target and rename, so a crash never leaves a half-written model in place.
      const tmp = join(models, `.building-${randomBytes(6).toString('hex')}`);
      mkdirSync(tmp);
      try {
        buildModel(dir, tmp, { precision, key, name: name ?? basename(dir) });
        const published = publish(tmp, target, key);
        return { dir: target, manifest: readManifest(target), built: published };
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    } finally {
      lock?.release();
    }
  }

  private async keyFor(dir: string, precision: FloatPrecision): Promise<string> {
    const files = openHfCheckpoint(dir).inputFiles;
    const memo = this.readDigestMemo();
    let changed = false;
    const h = createHash('sha256').update(JSON.stringify({ builder: BUILDER_VERSION, precision }));
    for (const f of files) {
      const st = statSync(f);
      let known = memo[f];
      if (!known || known.size !== st.size || known.mtimeMs !== st.mtimeMs) {
        known = { size: st.size, mtimeMs: st.mtimeMs, sha256: await sha256File(f) };
        memo[f] = known;
        changed = true;
      }
      h.update(`${basename(f)}:${known.sha256}\n`);
    }
    if (changed) this.writeDigestMemo(memo);
    return h.digest('hex');
  }

  private get memoPath(): string {
    return join(this.root, 'file-digests.json');
  }

  private readDigestMemo(): z.infer<typeof HashMemo> {
    try {
      return HashMemo.parse(JSON.parse(readFileSync(this.memoPath, 'utf8')));
    } catch {
      return {}; // missing or unreadable: digests are recomputed
    }
  }

  private writeDigestMemo(memo: z.infer<typeof HashMemo>): void {
    mkdirSync(this.root, { recursive: true });
    const tmp = `${this.memoPath}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify(memo));
    renameSync(tmp, this.memoPath);
  }
}

/** The manifest of a finished build of `key` in `dir`, or undefined (absent, unreadable or another key). */
function builtManifest(dir: string, key: string): ModelManifest | undefined {
  if (!existsSync(join(dir, MANIFEST_FILE))) return undefined;
  try {
    const manifest = readManifest(dir);
    return manifest.key === key ? manifest : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Renames a finished build into place unless a valid build of the same key is already there: that one may be
 * serving another process, so it is kept and `tmp` is left for the caller to remove (returns false). Anything
 * else at `target` (an unreadable or foreign directory, which `resolve` never hands out) is moved aside first.
 */
function publish(tmp: string, target: string, key: string): boolean {
  for (let attempt = 0; ; attempt++) {
    try {
      renameSync(tmp, target);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      if (builtManifest(target, key)) return false;
      if (attempt >= 3) throw new Error(`cannot publish the model build to ${target}: ${(e as Error).message}`);
    }
    const aside = join(dirname(target), `.stale-${randomBytes(6).toString('hex')}`);
    try {
      renameSync(target, aside);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // another process moved it meanwhile
    }
    rmSync(aside, { recursive: true, force: true });
  }
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => h.update(chunk))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}
