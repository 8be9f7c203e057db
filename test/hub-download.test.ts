import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { loadConfig } from '../src/config/load-config.js';
import { downloadHubModel, HubModelUnavailableError, parseHubReference } from '../src/model/checkpoint/hub-download.js';
import { jobModelName, resolveModelArg } from '../src/model/model-reference.js';
import { fixturePath } from './harness/fixtures.js';
import { FakeHub, type FakeRepo } from './harness/hub-server.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const COMMIT = 'c0ffee0000000000000000000000000000000001';
const REPO = 'genqueue-test/gpt2-tiny';

function gpt2TinyRepo(token?: string): FakeRepo {
  const files = new Map<string, { data: Buffer; lfs: boolean }>();
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) files.set(f, { data: readFileSync(fixturePath(`gpt2-tiny/${f}`)), lfs: false });
  files.set('model.safetensors', { data: readFileSync(fixturePath('gpt2-tiny/model.safetensors')), lfs: true });
  // Files genqueue does not read stay on the hub.
  files.set('pytorch_model.bin', { data: Buffer.alloc(1000, 1), lfs: true });
  files.set('README.md', { data: Buffer.from('# tiny\n'), lfs: false });
  return { commit: COMMIT, refs: { main: COMMIT, v1: COMMIT }, files, ...(token ? { token } : {}) };
}

describe('models by hub id (a local server with the hub URL layout)', () => {
  let hub: FakeHub;
  let dir: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    hub = await FakeHub.start({ [REPO]: gpt2TinyRepo(), 'genqueue-test/private': gpt2TinyRepo('hf_secret') });
  });
  after(() => hub.stop());
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-hub-'));
    env = { HF_ENDPOINT: hub.url, HF_HOME: join(dir, 'hf') };
    hub.requests.length = 0;
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const storage = (): string => join(dir, 'hf', 'hub', 'models--genqueue-test--gpt2-tiny');

  it('parses owner/name[@revision] and nothing else', () => {
    assert.deepEqual(parseHubReference('Qwen/Qwen2.5-0.5B-Instruct'), { repo: 'Qwen/Qwen2.5-0.5B-Instruct', revision: 'main' });
    assert.deepEqual(parseHubReference('org/model@refs/pr/1'), { repo: 'org/model', revision: 'refs/pr/1' });
    for (const bad of ['gpt2', './models/x', '/abs/path', 'a/b/c', 'a--b/c', 'a/../b', 'a/b@']) assert.equal(parseHubReference(bad), undefined, bad);
  });

  it('downloads the files genqueue reads into the Hugging Face cache layout', async () => {
    const snapshot = await downloadHubModel(parseHubReference(REPO)!, { env });
    assert.equal(snapshot, join(storage(), 'snapshots', COMMIT));
    assert.equal(readFileSync(join(storage(), 'refs', 'main'), 'utf8'), COMMIT);
    assert.deepEqual(readdirSync(snapshot).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const weights = join(snapshot, 'model.safetensors');
    assert.ok(lstatSync(weights).isSymbolicLink());
    assert.match(readlinkSync(weights), /^\.\.\/\.\.\/blobs\/[0-9a-f]{64}$/, 'LFS blobs are named by sha256, linked relatively');
    assert.match(readlinkSync(join(snapshot, 'config.json')), /^\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/, 'other blobs by git oid');
    assert.deepEqual(readFileSync(weights), readFileSync(fixturePath('gpt2-tiny/model.safetensors')));
    assert.ok(!hub.requests.some((r) => r.path.endsWith('pytorch_model.bin')), 'files genqueue does not read are not fetched');

    const before = hub.requests.length;
    await downloadHubModel(parseHubReference(REPO)!, { env });
    assert.ok(hub.requests.slice(before).every((r) => r.path.startsWith('/api/')), 'a second call downloads nothing');
  });

  it('resumes a download cut mid-file from where it stopped', async () => {
    hub.cut = { path: 'model.safetensors', bytes: 1_000_000 };
    let received = 0;
    let cut: () => void = () => undefined;
    const arrived = new Promise<void>((resolve) => (cut = resolve));
    const first = downloadHubModel(parseHubReference(REPO)!, {
      env,
      onProgress: (file, done) => {
        received = file === 'model.safetensors' ? done : received;
        if (received >= 1_000_000) cut();
      },
    });
    await arrived; // every byte the server sent has reached the download
    hub.cutHeldDownload();
    await assert.rejects(first);
    const partial = readdirSync(join(storage(), 'blobs')).find((f) => f.endsWith('.incomplete'));
    assert.ok(partial, 'the partial file is kept');
    const kept = statSync(join(storage(), 'blobs', partial)).size;
    assert.equal(kept, 1_000_000);
    const notes: string[] = [];
    const snapshot = await downloadHubModel(parseHubReference(REPO)!, { env, log: (l) => notes.push(l) });
    assert.ok(hub.requests.some((r) => r.path.endsWith('/model.safetensors') && r.range === `bytes=${kept}-${readFileSync(fixturePath('gpt2-tiny/model.safetensors')).length - 1}`));
    assert.match(notes.join('\n'), new RegExp(`resuming model\\.safetensors at ${kept} of`));
    assert.deepEqual(readFileSync(join(snapshot, 'model.safetensors')), readFileSync(fixturePath('gpt2-tiny/model.safetensors')));
  });

  it('a cached model works offline; offline and not cached is one line saying how to get a checkpoint directory', async () => {
    await downloadHubModel(parseHubReference(`${REPO}@v1`)!, { env });
    hub.requests.length = 0;
    const offline = { ...env, HF_HUB_OFFLINE: '1' };
    assert.equal(await downloadHubModel(parseHubReference(`${REPO}@v1`)!, { env: offline }), join(storage(), 'snapshots', COMMIT));
    assert.equal(await downloadHubModel(parseHubReference(`${REPO}@${COMMIT}`)!, { env: offline }), join(storage(), 'snapshots', COMMIT));
    assert.equal(hub.requests.length, 0, 'offline: no request');
    await assert.rejects(downloadHubModel(parseHubReference('genqueue-test/other')!, { env: offline }), (e: unknown) => {
      assert.ok(e instanceof HubModelUnavailableError);
      assert.doesNotMatch(e.message, /\n/);
      assert.match(e.message, /^genqueue-test\/other@main: HF_HUB_OFFLINE is set, and it is not in the Hugging Face cache \(.*\); .*name it in the config: "models": \{"other": \{"path": "\/path\/to\/checkpoint"\}\}$/);
      return true;
    });
    // The hub unreachable: the cache answers, else the same one line.
    const unreachable = { ...env, HF_ENDPOINT: 'http://127.0.0.1:9' };
    assert.equal(await downloadHubModel(parseHubReference(`${REPO}@v1`)!, { env: unreachable }), join(storage(), 'snapshots', COMMIT));
    await assert.rejects(downloadHubModel(parseHubReference('genqueue-test/other')!, { env: unreachable }), /the hub could not be reached .*not in the Hugging Face cache/);
  });

  it('sends HF_TOKEN; without it a gated model says to set it', async () => {
    await assert.rejects(downloadHubModel(parseHubReference('genqueue-test/private')!, { env }), /the hub needs a token \(HTTP 401\): set HF_TOKEN/);
    const snapshot = await downloadHubModel(parseHubReference('genqueue-test/private')!, { env: { ...env, HF_TOKEN: 'hf_secret' } });
    assert.ok(existsSync(join(snapshot, 'model.safetensors')));
    assert.ok(hub.requests.filter((r) => r.authorization).every((r) => r.authorization === 'Bearer hf_secret'));
  });

  it('--model owner/name builds the downloaded checkpoint; jobs name it by the repository name; a config name may point at a hub id', async () => {
    const config = { ...loadConfig({ env: {} }), cacheDir: join(dir, 'cache') };
    const byId = await resolveModelArg(REPO, config, undefined, { env });
    assert.equal(byId.name, 'gpt2-tiny');
    assert.equal(byId.manifest.spec.numLayers, 2);
    const named = await resolveModelArg('tiny', { ...config, models: { tiny: { path: `${REPO}@v1` } } }, undefined, { env });
    assert.equal(named.name, 'tiny');
    assert.equal(named.dir, byId.dir, 'the same files build once');
    await assert.rejects(resolveModelArg('no/such-model', config, undefined, { env }), /no such model or revision on the hub/);
    await assert.rejects(resolveModelArg('./not-here', config), /no such directory, not a hub id/);
  });

  it('a directory whose name cannot name a model in jobs must be named in the config', async () => {
    const odd = join(dir, 'my model');
    await run('cp', ['-r', fixturePath('gpt2-tiny'), odd]);
    const config = { ...loadConfig({ env: {} }), cacheDir: join(dir, 'cache') };
    await assert.rejects(resolveModelArg(odd, config), /gives no model name jobs can carry \("my model": .*name it in the config's models$/);
    assert.equal((await resolveModelArg('tiny', { ...config, models: { tiny: { path: odd } } })).name, 'tiny');
    assert.equal((await resolveModelArg(odd, { ...config, models: { tiny: { path: odd } } })).name, 'tiny', 'the registry name wins');
  });

  it('jobModelName maps an OpenAI file\'s model (hub id, config name, config path) to the queue a worker serves', () => {
    const models = { qwen: { path: 'Qwen/Qwen2.5-0.5B-Instruct' }, local: { path: '/models/gpt2' } };
    assert.equal(jobModelName('qwen', { models }), 'qwen');
    assert.equal(jobModelName('Qwen/Qwen2.5-0.5B-Instruct', { models }), 'qwen');
    assert.equal(jobModelName('/models/gpt2', { models }), 'local');
    assert.equal(jobModelName('meta-llama/Meta-Llama-3-8B-Instruct@main', { models }), 'Meta-Llama-3-8B-Instruct');
    assert.throws(() => jobModelName('/data/my model', { models }), /name it in the config's models/);
  });

  it('genqueue generate --model owner/name works through HF_ENDPOINT, then offline from the cache', async () => {
    const cliEnv = { ...process.env, ...env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), GENQUEUE_LOG_LEVEL: 'warn' };
    const args = [CLI, 'generate', '--model', REPO, '--prompt', 'Hello world', '--max-new-tokens', '3', '--json'];
    const first = await run(process.execPath, args, { env: cliEnv });
    const offline = await run(process.execPath, args, { env: { ...cliEnv, HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' } });
    assert.deepEqual(JSON.parse(offline.stdout).tokenIds, JSON.parse(first.stdout).tokenIds);
  });
});
