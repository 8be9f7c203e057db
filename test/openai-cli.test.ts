import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load-config.js';
import { ModelCache } from '../src/model/model-cache.js';
import { type StartedWorker, startWorker } from '../src/worker/worker-process.js';
import { CLI, genqueue } from './harness/cli-process.js';
import { eventually } from './harness/eventually.js';
import { fixturePath } from './harness/fixtures.js';
import { ErrorLine, OutputLine, VLLM_EXAMPLE } from './harness/openai-batch-lines.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

const request = (customId: string, url: string, body: Record<string, unknown>): string => JSON.stringify({ custom_id: customId, method: 'POST', url, body });
const completion = (customId: string, body: Record<string, unknown>): string => request(customId, '/v1/completions', body);
const chat = (customId: string, body: Record<string, unknown>): string => request(customId, '/v1/chat/completions', body);

/** Every line of a JSONL file, parsed (a line that does not parse fails the test). */
function lines(path: string): unknown[] {
  const text = readFileSync(path, 'utf8');
  assert.ok(text === '' || text.endsWith('\n'), `${path} ends with a newline`);
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as unknown);
}

describe('genqueue enqueue/results with OpenAI Batch files (vLLM run_batch-shaped, real workers)', () => {
  let dir: string;
  let redis: TestRedis;
  let env: NodeJS.ProcessEnv;
  const workers: StartedWorker[] = [];
  let config: ReturnType<typeof loadConfig>;
  let cache: ModelCache;

  const serve = async (fixture: string, name: string): Promise<void> => {
    const model = await cache.resolve(fixturePath(fixture));
    workers.push(await startWorker(config, { ...model, name }, { redisUrl: redis.url, maxBatch: 4, maxWaitMs: 20, device: 'cpu' }, pino({ level: 'silent' })));
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-oai-cli-'));
    redis = await startTestRedis();
    env = { ...process.env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), REDIS_URL: redis.url, GENQUEUE_LOG_LEVEL: 'warn' };
    config = { ...loadConfig({ env: {} }), cacheDir: join(dir, 'cache') };
    cache = new ModelCache(join(dir, 'cache'));
    await serve('gpt2-tiny', 'gpt2-tiny');
    // A Llama-shaped model with a chat template, served under its directory's name.
    await serve('llama-linear-tiny', 'llama-linear-tiny');
  });
  after(async () => {
    for (const w of workers) await w.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('bad requests are refused by file:line naming the field, and nothing is enqueued or written', async () => {
    const file = join(dir, 'bad.jsonl');
    writeFileSync(
      file,
      [
        completion('ok-1', { model: 'gpt2-tiny', prompt: 'Hello', max_tokens: 2, temperature: 0 }),
        request('emb-1', '/v1/embeddings', { model: 'gpt2-tiny', input: 'Hello' }),
        completion('n-1', { model: 'gpt2-tiny', prompt: 'Hello', n: 2 }),
        chat('lp-1', { model: 'gpt2-tiny', messages: [{ role: 'user', content: 'Hi' }], logprobs: true }),
      ].join('\n'),
    );
    const out = join(dir, 'bad-out.jsonl');
    writeFileSync(join(dir, 'plain.jsonl'), '{"prompt": "x", "model": "nobody"}\n');
    const [r, plain] = await Promise.all([
      genqueue(['enqueue', file, '--wait', '--out', out, '--errors-out', join(dir, 'bad-errors.jsonl')], env),
      genqueue(['enqueue', join(dir, 'plain.jsonl'), '--errors-out', join(dir, 'x.jsonl')], env),
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /bad\.jsonl: 3 invalid line\(s\), nothing enqueued/);
    assert.match(r.stderr, /line 2: url: "\/v1\/embeddings" is not supported \(supported: \/v1\/completions, \/v1\/chat\/completions\)/);
    assert.match(r.stderr, /line 3: body\.n: only n = 1 \(one choice per request\) is supported/);
    assert.match(r.stderr, /line 4: body\.logprobs: log probabilities are not returned/);
    assert.equal(existsSync(out), false);
    assert.equal(await redis.connection.exists('bull:genqueue.gpt2-tiny:ok-1'), 0);
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /--errors-out is for OpenAI Batch files, and .*plain\.jsonl is read as genqueue job lines/);
  });

  it('enqueue --wait writes output and error lines as OpenAI does (chat and completions, 400 for a request too long); a second run adds nothing', async () => {
    const file = join(dir, 'batch.jsonl');
    writeFileSync(
      file,
      `${[
        // A hub id names the model: its repository's name is the queue a worker given that hub id serves.
        chat('chat-1', { model: 'someorg/llama-linear-tiny', messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hello world!' }], max_completion_tokens: 6, temperature: 0 }),
        chat('chat-2', { model: 'llama-linear-tiny', messages: [{ role: 'user', content: 'Hello world!' }], max_completion_tokens: 1000 }),
        completion('cmpl-1', { model: 'gpt2-tiny', prompt: 'Hello world', max_tokens: 5, temperature: 0 }),
        completion('cmpl-2', { model: 'gpt2-tiny', prompt: 'Once upon a time', max_tokens: 3, temperature: 0.8, top_p: 0.9, seed: 7, stop: ['\n'], user: 'me' }),
        request('emb-1', '/v1/embeddings', { model: 'gpt2-tiny', input: 'Hello' }),
        completion('n-1', { model: 'gpt2-tiny', prompt: 'Hello', n: 2 }),
        '{not json',
      ].join('\n')}\n`,
    );
    const out = join(dir, 'out.jsonl');
    const errors = join(dir, 'errors.jsonl');
    const args = ['enqueue', file, '--wait', '--out', out, '--errors-out', errors, '--skip-invalid', '--timeout-ms', '120000'];
    const r = await genqueue(args, env);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /batch\.jsonl:5: refused: url: "\/v1\/embeddings" is not supported/);
    assert.match(r.stderr, /jobs 4: completed 3, failed 1, pending 0, missing 0, cancelled 0/);

    const outs = lines(out).map((l) => OutputLine.parse(l));
    assert.deepEqual(outs.map((o) => o.custom_id).sort(), ['chat-1', 'cmpl-1', 'cmpl-2']);
    const byId = new Map(outs.map((o) => [o.custom_id, o.response.body]));
    const chat1 = byId.get('chat-1')!;
    assert.equal(chat1.object, 'chat.completion');
    assert.equal(chat1.model, 'llama-linear-tiny');
    assert.equal(typeof chat1.choices[0]!.message?.content, 'string');
    assert.ok(chat1.usage.completion_tokens >= 1 && chat1.usage.completion_tokens <= 6);
    assert.equal(chat1.usage.total_tokens, chat1.usage.prompt_tokens + chat1.usage.completion_tokens);
    const cmpl1 = byId.get('cmpl-1')!;
    assert.deepEqual([cmpl1.object, cmpl1.model, cmpl1.usage.prompt_tokens, cmpl1.usage.completion_tokens], ['text_completion', 'gpt2-tiny', 2, 5]);
    assert.equal(typeof cmpl1.choices[0]!.text, 'string');

    const errs = lines(errors).map((l) => ErrorLine.parse(l));
    assert.equal(errs.length, 4);
    const tooLong = errs.find((e) => e.custom_id === 'chat-2')!;
    assert.equal(tooLong.response?.status_code, 400, 'too long for the context: the request is at fault');
    assert.equal(tooLong.response?.body.error.type, 'invalid_request_error');
    assert.match(tooLong.response!.body.error.message, /^prompt \(\d+ tokens\) \+ max_new_tokens \(1000\) = \d+ exceeds the model's context length 128$/);
    const refused = errs.filter((e) => e.response === null).map((e) => [e.custom_id, e.error?.code, e.error?.message.split(':')[0]]);
    assert.deepEqual(refused, [
      ['emb-1', 'invalid_request', 'line 5'],
      ['n-1', 'invalid_request', 'line 6'],
      [null, 'invalid_request', 'line 7'],
    ]);

    const again = await genqueue(args, env);
    assert.equal(again.code, 2, again.stderr); // refused lines again; every job already answered
    assert.match(again.stderr, /already written: 4 request\(s\)/);
    assert.match(again.stderr, /jobs 0: completed 0/);
    assert.equal(lines(out).length, 3);
    // The line without a custom_id cannot be recognised, so it is accounted for again; the others are not.
    assert.equal(lines(errors).length, 5);
  });

  it("vLLM's example file as it is, with --model naming the worker's model: routed there, and too long for its context", async () => {
    const file = join(dir, 'openai_example_batch.jsonl');
    writeFileSync(file, `${VLLM_EXAMPLE}\n`);
    const out = join(dir, 'example-out.jsonl');
    // --model takes what worker --model takes: a checkpoint directory names the model by its basename.
    const r = await genqueue(['enqueue', file, '--wait', '--out', out, '--model', fixturePath('llama-linear-tiny'), '--timeout-ms', '120000'], env);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /jobs 2: completed 0, failed 2/);
    // Without --errors-out, error lines go with the output lines, as vLLM's run_batch writes them.
    const errs = lines(out).map((l) => ErrorLine.parse(l));
    assert.deepEqual(errs.map((e) => [e.custom_id, e.response?.status_code]).sort(), [
      ['request-1', 400],
      ['request-2', 400],
    ]);
    assert.match(errs[0]!.response!.body.error.message, /max_new_tokens \(1000\) = \d+ exceeds the model's context length 128/);
  });

  it('an interrupted --wait resumes with results: no line lost, none written twice, a cut line written again', async () => {
    const file = join(dir, 'resume.jsonl');
    // Half the requests go to a model no worker serves yet, so the first run is interrupted with them outstanding.
    const requests = Array.from({ length: 6 }, (_, i) => completion(`r-${i}`, { model: i < 3 ? 'gpt2-tiny' : 'later', prompt: `Prompt ${i}`, max_tokens: 3, temperature: 0 }));
    writeFileSync(file, `${requests.join('\n')}\n`);
    const out = join(dir, 'resume-out.jsonl');
    const errors = join(dir, 'resume-errors.jsonl');
    const child = spawn(process.execPath, [CLI, 'enqueue', file, '--wait', '--out', out, '--errors-out', errors], { env, stdio: 'ignore' });
    const exited = once(child, 'exit');
    await eventually('the served requests written', () => (existsSync(out) && readFileSync(out, 'utf8').split('\n').length === 4 ? true : undefined), 120_000);
    child.kill('SIGKILL');
    await exited;
    // As if the interruption had cut the last line mid-write.
    const text = readFileSync(out, 'utf8');
    truncateSync(out, Buffer.byteLength(text) - 40);
    const cut = (JSON.parse(text.trimEnd().split('\n').pop()!) as { custom_id: string }).custom_id;

    await serve('gpt2-tiny', 'later');
    const r = await genqueue(['results', '--ids-from', file, '--wait', '--out', out, '--errors-out', errors, '--timeout-ms', '120000'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /already written: 2 request\(s\)/);
    assert.match(r.stderr, /jobs 4: completed 4, failed 0/);
    const outs = lines(out).map((l) => OutputLine.parse(l));
    assert.deepEqual(outs.map((o) => o.custom_id).sort(), ['r-0', 'r-1', 'r-2', 'r-3', 'r-4', 'r-5']);
    assert.ok(outs.slice(2).some((o) => o.custom_id === cut), 'the cut request was written again, after the others');
    assert.equal(readFileSync(errors, 'utf8'), '');
  });

  it('enqueue without --wait writes <file>.ids.jsonl (custom_id, url, queue); results --ids-from it writes OpenAI lines', async () => {
    const file = join(dir, 'later.jsonl');
    writeFileSync(file, `${[completion('l-1', { model: 'gpt2-tiny', prompt: 'Hello', max_tokens: 2, temperature: 0 }), chat('l-2', { model: 'llama-linear-tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, temperature: 0 })].join('\n')}\n`);
    const e = await genqueue(['enqueue', file], env);
    assert.equal(e.code, 0, e.stderr);
    const ids = `${file}.ids.jsonl`;
    assert.match(e.stderr, new RegExp(`ids: ${ids.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(genqueue results --ids-from `));
    assert.deepEqual(lines(ids), [
      { id: 'l-1', line: 1, queue: 'genqueue.gpt2-tiny', custom_id: 'l-1', url: '/v1/completions' },
      { id: 'l-2', line: 2, queue: 'genqueue.llama-linear-tiny', custom_id: 'l-2', url: '/v1/chat/completions' },
    ]);
    const out = join(dir, 'later-out.jsonl');
    const r = await genqueue(['results', '--ids-from', ids, '--wait', '--out', out, '--timeout-ms', '120000'], env);
    assert.equal(r.code, 0, r.stderr);
    const outs = lines(out).map((l) => OutputLine.parse(l));
    assert.deepEqual(outs.map((o) => [o.custom_id, o.response.body.object]).sort(), [
      ['l-1', 'text_completion'],
      ['l-2', 'chat.completion'],
    ]);
  });
});

describe('genqueue enqueue: the default ids file', () => {
  let dir: string;
  let redis: TestRedis;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-ids-'));
    redis = await startTestRedis();
    env = { ...process.env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), REDIS_URL: redis.url, GENQUEUE_LOG_LEVEL: 'warn' };
  });
  after(async () => {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a file without ids, enqueued without --wait or --ids-out, leaves <file>.ids.jsonl (or one in the cache) for results', async () => {
    const file = join(dir, 'no-ids.jsonl');
    writeFileSync(file, '{"prompt": "a", "model": "nobody"}\n{"prompt": "b", "model": "nobody"}\n');
    // Where <file>.ids.jsonl cannot be written (here a directory of that name), the ids go to the cache directory.
    const other = join(dir, 'blocked.jsonl');
    writeFileSync(other, '{"prompt": "c", "model": "nobody"}\n');
    mkdirSync(`${other}.ids.jsonl`);
    // --ids-out: no default file.
    const explicit = join(dir, 'explicit.jsonl');
    writeFileSync(explicit, '{"prompt": "d", "model": "nobody"}\n');
    const [e, b, x] = await Promise.all([
      genqueue(['enqueue', file], env),
      genqueue(['enqueue', other], env),
      genqueue(['enqueue', explicit, '--ids-out', join(dir, 'mine.jsonl')], env),
    ]);
    assert.equal(e.code, 0, e.stderr);
    const ids = `${file}.ids.jsonl`;
    assert.ok(e.stderr.includes(`ids: ${ids} (genqueue results --ids-from ${ids} fetches the results)`), e.stderr);
    const entries = lines(ids) as { id: string; queue: string }[];
    assert.equal(entries.length, 2);
    assert.deepEqual(entries.map((x) => x.queue), ['genqueue.nobody', 'genqueue.nobody']);
    const r = await genqueue(['results', '--ids-from', ids], env);
    assert.equal(r.code, 1, 'not finished yet');
    assert.deepEqual(
      r.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown),
      entries.map((x) => ({ id: x.id, status: 'pending' })),
      'the random ids the jobs got are found again',
    );

    assert.equal(b.code, 0, b.stderr);
    const fallback = /ids: (\S+) \(genqueue results/.exec(b.stderr)?.[1];
    assert.ok(fallback?.startsWith(join(dir, 'cache', 'ids', 'blocked.jsonl-')), b.stderr);
    assert.equal(lines(fallback!).length, 1);

    assert.equal(x.code, 0, x.stderr);
    assert.equal(existsSync(`${explicit}.ids.jsonl`), false);
    assert.doesNotMatch(x.stderr, /ids: /);
    assert.equal(lines(join(dir, 'mine.jsonl')).length, 1);
  });
});
