import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { z } from 'zod';
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

const HashMemo = z.record(z.string(), z.object({ size: z.number(), mtimeMs: z.number(), sha256: z.string() }));

/**
 * Built models, keyed by a SHA-256 over the builder version, the build options and the checkpoint's files,
 * so a second start reuses the build and any change to the weights or the builder rebuilds it.
 * File digests are memoised by (path, size, mtime) so that a warm start does not re-read gigabytes.
 */
export class ModelCache {
  constructor(readonly root: string = defaultCacheDir()) {}

  /** A built model directory as is, or a Hugging Face checkpoint directory built on first use. */
  async resolve(source: string, precision: FloatPrecision = 'fp32', name?: string): Promise<ResolvedModel> {
    const dir = resolve(source);
    if (existsSync(join(dir, MANIFEST_FILE))) return { dir, manifest: readManifest(dir), built: false };
    if (!isHfCheckpointDir(dir)) throw new Error(`${source}: neither a built model (${MANIFEST_FILE}) nor a Hugging Face checkpoint (config.json)`);
    const key = await this.keyFor(dir, precision);
    const target = join(this.root, 'models', key.slice(0, 24));
    if (existsSync(join(target, MANIFEST_FILE))) {
      const manifest = readManifest(target);
      if (manifest.key === key) return { dir: target, manifest, built: false };
    }
    mkdirSync(join(this.root, 'models'), { recursive: true });
    // Build beside the target and rename, so a crash or a concurrent build never leaves a half-written model in place.
    const tmp = join(this.root, 'models', `.building-${randomBytes(6).toString('hex')}`);
    mkdirSync(tmp);
    try {
      buildModel(dir, tmp, { precision, key, name: name ?? basename(dir) });
      rmSync(target, { recursive: true, force: true });
      renameSync(tmp, target);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      if (existsSync(join(target, MANIFEST_FILE)) && readManifest(target).key === key) {
        return { dir: target, manifest: readManifest(target), built: false };
      }
      throw e;
    }
    return { dir: target, manifest: readManifest(target), built: true };
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

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => h.update(chunk))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}
