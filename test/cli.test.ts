import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, genqueue } from './harness/cli-process.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

describe('genqueue CLI', () => {
  let dir: string;
  let redis: TestRedis;
  let env: NodeJS.ProcessEnv;
  let worker: ChildProcess | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-cli-'));
    redis = await startTestRedis();
    env = { ...process.env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), REDIS_URL: redis.url, GENQUEUE_LOG_LEVEL: 'warn' };
  });
  after(async () => {
    worker?.kill('SIGTERM');
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('--help lists the commands', async () => {
    const r = await genqueue(['--help'], env);
    assert.equal(r.code, 0);
    for (const c of ['demo', 'build', 'generate', 'worker', 'enqueue', 'results', 'cancel']) assert.match(r.stdout, new RegExp(`\\n  ${c}\\b`));
  });

  it('build writes a model directory; generate --json prints one line per prompt with the contract fields', async () => {
    const built = join(dir, 'built');
    const b = await genqueue(['build', fixturePath('gpt2-tiny'), '--out', built], env);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /built gpt2-tiny \(gpt2, 2 layers, 32 hidden, fp32\)/);
    const prompts = join(dir, 'prompts.jsonl');
    writeFileSync(prompts, '{"prompt": "Hello world"}\n{"prompt": "Once upon a time", "max_new_tokens": 3}\n');
    const g = await genqueue(['generate', '--model', built, '--prompts-file', prompts, '--max-new-tokens', '5', '--json'], env);
    assert.equal(g.code, 0, g.stderr);
    const lines = g.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.deepEqual(Object.keys(lines[0]!).sort(), ['finishReason', 'prompt', 'promptTokenIds', 'text', 'timings', 'tokenIds']);
    assert.deepEqual(lines[0]!.promptTokenIds, [15496, 995]);
    assert.equal((lines[0]!.tokenIds as number[]).length, 5);
    assert.equal((lines[1]!.tokenIds as number[]).length, 3, 'a line may override the flag default');
  });

  it('generate builds an HF checkpoint on first use and reuses the cache on the second', async () => {
    const args = ['generate', '--model', fixturePath('gpt2-tiny'), '--prompt', 'Hello world', '--max-new-tokens', '4', '--json'];
    const first = await genqueue(args, { ...env, GENQUEUE_LOG_LEVEL: 'info' });
    const second = await genqueue(args, { ...env, GENQUEUE_LOG_LEVEL: 'info' });
    assert.match(first.stderr, /built model/);
    assert.doesNotMatch(second.stderr, /built model/);
    assert.deepEqual(JSON.parse(first.stdout).tokenIds, JSON.parse(second.stdout).tokenIds);
  });

  it('a prompt + max_new_tokens beyond the context length is a clear error', async () => {
    const r = await genqueue(['generate', '--model', fixturePath('gpt2-tiny'), '--prompt', 'Hello world', '--max-new-tokens', '200'], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /prompt \(2 tokens\) \+ max_new_tokens \(200\) = 202 exceeds the model's context length 128/);
  });

  it('enqueue refuses an invalid file with line numbers and exit code 2', async () => {
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"prompt": "ok"}\n{"prompt": "x", "num_beams": "four"}\n');
    const r = await genqueue(['enqueue', bad], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /line 2: num_beams: /);
    assert.match(r.stderr, /nothing enqueued/);
  });

  it('enqueue --wait reports jobs that vanish (evicted, flushed) as missing and exits 1', async () => {
    // No worker serves this model's queue, so the jobs stay waiting until they are deleted under the collector.
    const jobs = join(dir, 'vanish.jsonl');
    writeFileSync(jobs, Array.from({ length: 3 }, (_, i) => JSON.stringify({ id: `v-${i}`, prompt: 'p', model: 'nobody' })).join('\n'));
    const out = join(dir, 'vanish-results.jsonl');
    const running = genqueue(['enqueue', jobs, '--wait', '--out', out, '--timeout-ms', '60000', '--recheck-ms', '200'], env);
    const deadline = Date.now() + 60_000;
    while ((await redis.connection.llen('bull:genqueue.nobody:wait')) < 3) {
      assert.ok(Date.now() < deadline, 'jobs never reached the queue');
      await new Promise((r) => setTimeout(r, 50));
    }
    await redis.connection.del('bull:genqueue.nobody:v-0', 'bull:genqueue.nobody:v-1', 'bull:genqueue.nobody:v-2');
    const r = await running;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /jobs 3: completed 0, failed 0, pending 0, missing 3, cancelled 0/);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; status: string; error: string });
    assert.deepEqual(lines.map((l) => `${l.id}:${l.status}`).sort(), ['v-0:missing', 'v-1:missing', 'v-2:missing']);
    assert.match(lines[0]!.error, /not in Redis/);
  });

  it('enqueue warns about a reused id with a different prompt, and refuses a prompt over GENQUEUE_MAX_PROMPT_CHARS', async () => {
    const dups = join(dir, 'dups.jsonl');
    writeFileSync(dups, '{"id": "dup-1", "prompt": "a", "model": "nobody"}\n{"id": "dup-1", "prompt": "b", "model": "nobody"}\n');
    const ids = join(dir, 'dups-ids.jsonl');
    const d = await genqueue(['enqueue', dups, '--ids-out', ids], env);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stderr, /dups.jsonl:2: warning: id dup-1 already enqueued from line 1 with a different prompt; this line was not enqueued/);
    assert.match(d.stderr, /enqueued 1, already queued 1 \(1 with different content, not enqueued\), refused 0/);
    const long = join(dir, 'long.jsonl');
    writeFileSync(long, `${JSON.stringify({ prompt: 'x'.repeat(11) })}\n`);
    const l = await genqueue(['enqueue', long], { ...env, GENQUEUE_MAX_PROMPT_CHARS: '10' });
    assert.equal(l.code, 2);
    assert.match(l.stderr, /line 1: prompt: 11 characters exceeds the limit of 10 \(limits.maxPromptChars\)/);
  });

  it('enqueue --priority/--delay-ms/--attempts/--keep-* set every job\'s options, a line\'s own fields win', async () => {
    const jobs = join(dir, 'controls.jsonl');
    writeFileSync(jobs, '{"id": "ctl-1", "prompt": "a", "model": "ctl"}\n{"id": "ctl-2", "prompt": "b", "model": "ctl", "priority": 1, "attempts": 1}\n');
    const flags = ['--priority', '9', '--delay-ms', '5000', '--attempts', '4', '--keep-completed', 'age=2h,count=50', '--keep-failed', 'all'];
    const r = await genqueue(['enqueue', jobs, ...flags], env);
    assert.equal(r.code, 0, r.stderr);
    const opts = async (id: string): Promise<Record<string, unknown>> => JSON.parse((await redis.connection.hget(`bull:genqueue.ctl:${id}`, 'opts'))!) as Record<string, unknown>;
    const [a, b] = [await opts('ctl-1'), await opts('ctl-2')];
    assert.deepEqual([a.priority, a.delay, a.attempts, a.removeOnComplete, a.removeOnFail], [9, 5000, 4, { age: 7200, count: 50 }, false]);
    assert.deepEqual([b.priority, b.attempts], [1, 1]);
    // Without flags, the config file's settings apply; a retention given there replaces the default week.
    const config = join(dir, 'controls-config.json');
    writeFileSync(config, JSON.stringify({ jobs: { attempts: 2, backoffMs: 50 }, retention: { completed: { count: 3 } } }));
    const plain = join(dir, 'controls-plain.jsonl');
    writeFileSync(plain, '{"id": "ctl-3", "prompt": "c", "model": "ctl"}\n');
    const c = await genqueue(['enqueue', plain, '--config', config], env);
    assert.equal(c.code, 0, c.stderr);
    const d = await opts('ctl-3');
    assert.deepEqual([d.attempts, d.backoff, d.removeOnComplete, d.removeOnFail], [2, { type: 'exponential', delay: 50 }, { count: 3 }, { age: 604_800 }]);
    const bad = await genqueue(['enqueue', jobs, '--keep-completed', 'forever'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--keep-completed: expected age=N\[s\|m\|h\|d\], count=N, both \(comma-separated\) or all; got "forever"/);
    const high = await genqueue(['enqueue', jobs, '--priority', '2097152'], env);
    assert.match(high.stderr, /--priority must be an integer from 1 to 2097151/);
  });

  it('cancel --ids-from removes waiting jobs, and results reports each as cancelled', async () => {
    const jobs = join(dir, 'cancel.jsonl');
    writeFileSync(jobs, Array.from({ length: 3 }, (_, i) => JSON.stringify({ id: `can-${i}`, prompt: 'p', model: 'nobody', metadata: { i } })).join('\n'));
    assert.equal((await genqueue(['enqueue', jobs], env)).code, 0);
    const ids = join(dir, 'cancel-ids.jsonl');
    writeFileSync(ids, `${readFileSync(jobs, 'utf8')}\n{"id": "can-unknown"}\n`);
    const c = await genqueue(['cancel', '--ids-from', ids], env);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stderr, /jobs 4: removed 3 \(waiting\), marked 0 \(active: they end as cancelled\), already finished 0, missing 1/);
    const out = join(dir, 'cancel-results.jsonl');
    const r = await genqueue(['results', '--ids-from', ids, '--out', out], env);
    assert.equal(r.code, 1, 'not every job completed');
    assert.match(r.stderr, /jobs 4: completed 0, failed 0, pending 0, missing 1, cancelled 3/);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; status: string });
    assert.deepEqual(lines.map((l) => `${l.id}:${l.status}`).sort(), ['can-0:cancelled', 'can-1:cancelled', 'can-2:cancelled', 'can-unknown:missing']);
  });

  it('worker + enqueue --wait + results: every job answered through Redis', async () => {
    const args = ['worker', '--model', fixturePath('gpt2-tiny'), '--max-batch', '4', '--max-wait-ms', '50', '--warmup-lengths', '12,20'];
    worker = spawn(process.execPath, [CLI, ...args], {
      env,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const jobs = join(dir, 'jobs.jsonl');
    writeFileSync(jobs, Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: `cli-${i}`, prompt: `Prompt number ${i}`, max_new_tokens: 4 })).join('\n'));
    const out = join(dir, 'results.jsonl');
    const e = await genqueue(['enqueue', jobs, '--wait', '--out', out, '--timeout-ms', '60000'], env);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stderr, /jobs 10: completed 10, failed 0, pending 0, missing 0/);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; tokenIds: number[]; text: string });
    assert.equal(lines.length, 10);
    for (const l of lines) {
      assert.equal(l.tokenIds.length, 4);
      assert.deepEqual(Object.keys(l).sort(), ['finishReason', 'id', 'model', 'prompt', 'text', 'timings', 'tokenIds', 'usage']);
    }
    const again = join(dir, 'again.jsonl');
    const r = await genqueue(['results', '--ids-from', jobs, '--out', again], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(again, 'utf8').trim().split('\n').length, 10);
    const exited = new Promise((resolve) => worker!.once('exit', resolve));
    worker.kill('SIGTERM');
    assert.equal(await exited, 0, 'worker exits cleanly on SIGTERM');
    worker = undefined;
  });

  it('demo runs end to end with its own redis-server and the built-in model', async () => {
    const { REDIS_URL: _ignored, ...noRedis } = env;
    const r = await genqueue(['demo', '--jobs', '12', '--max-new-tokens', '8'], noRedis);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /started a private redis-server/);
    assert.match(r.stdout, /done: 12 completed, 0 failed/);
  });
});
