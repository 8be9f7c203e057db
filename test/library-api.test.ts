import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
// The package's own name: Node resolves it through package.json "exports", as a consumer's import would.
import { type LibraryWorker, loadConfig, openEngine, startWorker } from 'genqueue';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../jobs/examples/library-example.js', import.meta.url));

describe('library API (import … from "genqueue")', () => {
  let dir: string;
  let redis: TestRedis;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-lib-'));
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const config = () => ({ ...loadConfig({ env: {} }), logLevel: 'warn' as const, cacheDir: join(dir, 'cache') });

  it('the README example enqueues 1,000 prompts and gets 1,000 results from a worker started with startWorker()', { timeout: 300_000 }, async () => {
    let worker: LibraryWorker | undefined;
    try {
      worker = await startWorker({ model: fixturePath('gpt2-tiny'), device: 'cpu', redisUrl: redis.url, maxBatch: 64, config: config() });
      assert.equal(worker.modelName, 'gpt2-tiny');
      const { stdout } = await run(process.execPath, [EXAMPLE], {
        env: { ...process.env, REDIS_URL: redis.url, EXAMPLE_JOBS: '1000', EXAMPLE_MAX_NEW_TOKENS: '2' },
        maxBuffer: 16 * 1024 * 1024,
      });
      const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: string; text?: string; status?: string });
      assert.equal(lines.length, 1000);
      assert.equal(new Set(lines.map((l) => l.id)).size, 1000);
      assert.ok(lines.every((l) => typeof l.text === 'string'), JSON.stringify(lines.find((l) => typeof l.text !== 'string')));
    } finally {
      await worker?.close();
    }
  });

  it('openEngine generates text for prompts and job fields; bad fields name the input', async () => {
    const engine = await openEngine({ model: fixturePath('gpt2-tiny'), device: 'cpu', thread: false, config: config() });
    try {
      assert.equal(engine.modelName, 'gpt2-tiny');
      const [a, b] = await engine.generate(['Hello world', { prompt: 'Once upon a time', max_new_tokens: 3 }]);
      assert.ok(a && 'text' in a && b && 'text' in b);
      assert.equal(b.tokenIds.length <= 3, true);
      assert.equal(b.text, await engine.tokenizer.decode(b.tokenIds));
      await assert.rejects(engine.generate(['ok', { prompt: 'x', max_tokens: 3 } as never]), /input 1: unknown field\(s\) "max_tokens"/);
    } finally {
      await engine.close();
      await engine.close(); // idempotent
    }
  });

  it('a consumer project type-checks against the built declarations and npm pack ships them', { timeout: 120_000 }, async () => {
    const consumer = join(dir, 'consumer');
    mkdirSync(join(consumer, 'node_modules'), { recursive: true });
    symlinkSync(ROOT, join(consumer, 'node_modules', 'genqueue'));
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', type: 'module' }));
    writeFileSync(
      join(consumer, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, skipLibCheck: true, types: [] } }),
    );
    const good = [
      "import { JobProducer, ResultCollector, startWorker, openEngine, createRedisConnection, jobFromFields, type JobResult } from 'genqueue';",
      'const connection = createRedisConnection("redis://127.0.0.1:6379");',
      'const producer = new JobProducer({ connection });',
      'const jobs = await producer.enqueueJobs([jobFromFields({ prompt: "hi", max_new_tokens: 4 })]);',
      'for await (const r of new ResultCollector({ connection }).collect(jobs, { wait: true })) { if (r.status === "completed") { const x: JobResult = r.result; void x; } }',
      'const w = await startWorker({ model: "gpt2", device: "cuda:0", maxBatch: 64 }); const n: string = w.modelName; void n;',
      'const e = await openEngine({ model: "gpt2" }); const out = await e.generate(["hi"]); void out;',
    ].join('\n');
    writeFileSync(join(consumer, 'good.ts'), good);
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const ok = await run(process.execPath, [tsc, '-p', consumer], { cwd: consumer }).then(
      () => '',
      (e: { stdout: string }) => e.stdout,
    );
    assert.equal(ok, '', 'the consumer should type-check');
    writeFileSync(join(consumer, 'bad.ts'), "import { startWorker } from 'genqueue';\nawait startWorker({ model: 'gpt2', maxBatch: 'many' });\n");
    const bad = await run(process.execPath, [tsc, '-p', consumer], { cwd: consumer }).then(
      () => '',
      (e: { stdout: string }) => e.stdout,
    );
    assert.match(bad, /bad\.ts\(2,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/);

    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 });
    const files = new Set((JSON.parse(stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path));
    for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'config/default.json', 'assets/gpt2/tokenizer.json', 'native/build.sh']) {
      assert.ok(files.has(f), `${f} is in the package`);
    }
    assert.ok(![...files].some((f) => f.startsWith('dist/test/') || f.startsWith('test/')), 'tests stay out of the package');
  });
});
