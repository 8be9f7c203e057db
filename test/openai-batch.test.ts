import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields, parseJob } from '../src/queue/job-schema.js';
import {
  detectFileFormat,
  jobIdForCustomId,
  openAiLines,
  type OpenAiJobFields,
  openAiOutputLine,
  openAiRefusedLine,
  type OpenAiRequestRef,
  parseOpenAiRequest,
  readOpenAiBatch,
  repairLastLine,
  writtenCustomIds,
} from '../src/queue/openai-batch.js';
import { queueNameFor } from '../src/queue/queue-names.js';
import { ResultCollector } from '../src/queue/result-collector.js';
import type { JobResult } from '../src/queue/result-schema.js';
import { ModelCache } from '../src/model/model-cache.js';
import { startWorker, type StartedWorker } from '../src/worker/worker-process.js';
import { loadConfig } from '../src/config/load-config.js';
import { pino } from 'pino';
import { fixturePath } from './harness/fixtures.js';
import { OutputLine, VLLM_EXAMPLE } from './harness/openai-batch-lines.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

/** A hub id routes to the queue a worker started with `--model <hub id>` serves: the repository's name. */
const repoName = (model: string): string => model.split('/').pop()!;

const completion = (customId: string, body: Record<string, unknown>): Record<string, unknown> => ({ custom_id: customId, method: 'POST', url: '/v1/completions', body });
const chat = (customId: string, body: Record<string, unknown>): Record<string, unknown> => ({ custom_id: customId, method: 'POST', url: '/v1/chat/completions', body });

function fieldsOf(raw: unknown, options = {}): OpenAiJobFields {
  const p = parseOpenAiRequest(raw, options);
  assert.ok(p.ok, p.ok ? '' : p.error);
  return p.fields;
}

function errorOf(raw: unknown, options = {}): string {
  const p = parseOpenAiRequest(raw, options);
  assert.ok(!p.ok, 'expected a refusal');
  return p.error;
}

describe('OpenAI Batch input lines → job fields', () => {
  it("reads vLLM's run_batch example file: chat messages, max_completion_tokens, OpenAI's default sampling", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-oai-'));
    try {
      const file = join(dir, 'openai_example_batch.jsonl');
      writeFileSync(file, `${VLLM_EXAMPLE}\n`);
      const lines = [];
      for await (const l of readOpenAiBatch(file, { modelName: repoName })) lines.push(l);
      assert.equal(lines.length, 2);
      const [first] = lines;
      assert.ok(first!.parsed.ok);
      assert.deepEqual(first!.parsed.ref, { id: 'request-1', customId: 'request-1', endpoint: 'chat' });
      assert.deepEqual(first!.parsed.fields, {
        id: 'request-1',
        messages: [
          { role: 'system', content: 'You are a helpful assistant.' },
          { role: 'user', content: 'Hello world!' },
        ],
        model: 'Meta-Llama-3-8B-Instruct',
        max_new_tokens: 1000,
        decoding: 'sample',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('body.model must name a model unless the caller maps it or --model overrides it', () => {
    const line = JSON.parse(VLLM_EXAMPLE.split('\n')[0]!) as unknown;
    assert.match(errorOf(line), /^body\.model: "meta-llama\/Meta-Llama-3-8B-Instruct" is not a model name .*pass --model$/);
    assert.equal(fieldsOf(line, { model: 'llama' }).model, 'llama');
    assert.equal(fieldsOf(chat('a', { model: 'gpt2-tiny', messages: [{ role: 'user', content: 'hi' }] })).model, 'gpt2-tiny');
    assert.equal(fieldsOf(chat('a', { messages: [{ role: 'user', content: 'hi' }] })).model, undefined, 'no model: the shared queue');
  });

  it('completions: temperature 0 is greedy; seed and stop are carried; every mapping is a valid genqueue job', () => {
    const f = fieldsOf(completion('c-1', { model: 'gpt2-tiny', prompt: 'Once upon a time', max_tokens: 16, temperature: 0, top_p: 0.5, seed: 42, stop: '\n' }));
    assert.deepEqual(f, { id: 'c-1', prompt: 'Once upon a time', model: 'gpt2-tiny', max_new_tokens: 16, decoding: 'greedy', seed: 42, stop: ['\n'] });
    assert.ok(parseJob(f).ok);
    const s = fieldsOf(completion('c-2', { prompt: 'x', temperature: 0.7, top_p: 0.9, top_k: 40, min_tokens: 2, repetition_penalty: 1.1, stop: ['a', 'b'] }));
    assert.deepEqual(s, { id: 'c-2', prompt: 'x', min_new_tokens: 2, decoding: 'sample', temperature: 0.7, top_p: 0.9, top_k: 40, repetition_penalty: 1.1, stop: ['a', 'b'] });
    assert.ok(parseJob(s).ok);
  });

  it('job fields seed, stop, stream: bounds, a decimal string for seeds past 2^53, and each refusal naming the field', () => {
    const job = (fields: Record<string, unknown>) => parseJob({ prompt: 'x', ...fields });
    const refusal = (fields: Record<string, unknown>): string => {
      const p = job(fields);
      assert.ok(!p.ok, `expected a refusal of ${JSON.stringify(fields)}`);
      return p.error;
    };
    const ok = job({ seed: 42, stop: ['\n\n', 'END'], stream: true });
    assert.ok(ok.ok);
    assert.deepEqual([ok.job.seed, ok.job.stop, ok.job.stream], [42, ['\n\n', 'END'], true]);
    const plain = job({});
    assert.ok(plain.ok);
    assert.deepEqual([plain.job.seed, plain.job.stop, plain.job.stream], [undefined, undefined, false]);
    const max = job({ seed: '9223372036854775807' });
    assert.ok(max.ok && BigInt(max.job.seed!) === 2n ** 63n - 1n);
    assert.ok(job({ seed: Number.MAX_SAFE_INTEGER }).ok);
    assert.ok(job({ seed: 0 }).ok);
    // JSON.parse has already rounded this one: refused, pointing at the string form.
    assert.match(refusal(JSON.parse('{"seed": 9007199254740993}') as Record<string, unknown>), /^seed: above 2\^53 - 1 a JSON number loses precision: give the seed as a decimal string/);
    assert.match(refusal({ seed: '9223372036854775808' }), /^seed: must be at most 2\^63 - 1/);
    assert.match(refusal({ seed: -1 }), /^seed: must be an integer from 0 to 2\^63 - 1$/);
    assert.match(refusal({ seed: 1.5 }), /^seed: must be an integer from 0 to 2\^63 - 1$/);
    assert.match(refusal({ seed: '007' }), /^seed: a seed string must be a decimal integer/);
    assert.match(refusal({ seed: true }), /^seed: must be an integer or a decimal string$/);
    assert.match(refusal({ stop: ['a', ''] }), /^stop\.1: must not be empty$/);
    assert.match(refusal({ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }), /^stop: at most 16 stop strings$/);
    assert.match(refusal({ stop: 'a' }), /^stop: /);
    assert.match(refusal({ stream: 'yes' }), /^stream: /);
    // Sampling with temperature 0 (or below) is refused; OpenAI's temperature 0 maps to greedy instead.
    assert.match(refusal({ decoding: 'sample', temperature: 0 }), /^temperature: must be at least 0\.001$/);
    assert.match(refusal({ decoding: 'sample', temperature: -1 }), /^temperature: must be at least 0\.001$/);
  });

  it("the job schema's refusals of a request name its body fields", () => {
    assert.equal(fieldsOf(completion('s', { prompt: 'x', seed: '9223372036854775807' })).seed, '9223372036854775807');
    const cases: [Record<string, unknown>, RegExp][] = [
      [completion('a', { prompt: 'x', seed: 2 ** 60 }), /^body\.seed: above 2\^53 - 1 a JSON number loses precision/],
      [completion('a', { prompt: 'x', seed: -5 }), /^body\.seed: must be an integer from 0/],
      [completion('a', { prompt: 'x', stop: ['a', ''] }), /^body\.stop\.1: must not be empty$/],
      [completion('a', { prompt: 'x', stop: '' }), /^body\.stop\.0: must not be empty$/],
      [completion('a', { prompt: 'x', stop: 5 }), /^body\.stop: /],
      [completion('a', { prompt: 'x', temperature: 0.0001 }), /^body\.temperature: must be at least 0\.001$/],
      [completion('a', { prompt: 'x', temperature: 0.5, top_p: 0.0001 }), /^body\.top_p: must be at least 0\.001$/],
      [completion('a', { prompt: 'x', repetition_penalty: 1000 }), /^body\.repetition_penalty: must be at most 100$/],
      [completion('a', { prompt: 'x', max_tokens: 4, min_tokens: 8 }), /^body\.min_tokens: /],
      [chat('a', { messages: [{ role: 'user', content: 'x' }], max_completion_tokens: 4, min_tokens: 8 }), /^body\.min_tokens: /],
      [completion('a:b', { prompt: 'x', model: 'has space' }), /^body\.model: /],
    ];
    for (const [line, expected] of cases) assert.match(errorOf(line), expected, JSON.stringify(line));
  });

  it('as a JobProducer line format: jobs tagged with custom_id and url; the prompt bound names body.prompt', () => {
    const format = openAiLines({ model: 'gpt2-tiny' });
    const ok = format.parse(chat('r-1', { messages: [{ role: 'user', content: 'hi' }] }), { maxPromptChars: 10 });
    assert.ok(ok.ok);
    assert.deepEqual(ok.tags, { custom_id: 'r-1', url: '/v1/chat/completions' });
    assert.deepEqual([ok.job.id, ok.job.model, ok.job.max_new_tokens, ok.job.stream], ['r-1', 'gpt2-tiny', 64, false]);
    const long = format.parse(completion('r-2', { prompt: 'x'.repeat(11) }), { maxPromptChars: 10 });
    assert.deepEqual(long, { ok: false, error: 'body.prompt: 11 characters exceeds the limit of 10 (limits.maxPromptChars)', tags: { custom_id: 'r-2' } });
    assert.deepEqual(format.parse({ url: '/v1/completions' }, { maxPromptChars: 10 }).tags, undefined, 'no custom_id: nothing to tag');
  });

  it('a file is OpenAI Batch when its first line is a request or the ids entry of one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-oai-'));
    try {
      const file = (name: string, text: string): string => {
        writeFileSync(join(dir, name), text);
        return join(dir, name);
      };
      assert.equal(await detectFileFormat(file('req.jsonl', `\n  \n${JSON.stringify(completion('a', { prompt: 'x' }))}\n{"prompt": "y"}\n`)), 'openai');
      assert.equal(await detectFileFormat(file('ids.jsonl', '{"id":"a","line":1,"queue":"genqueue","custom_id":"a","url":"/v1/completions"}\n')), 'openai');
      assert.equal(await detectFileFormat(file('jobs.jsonl', `{"prompt": "y"}\n${JSON.stringify(completion('a', { prompt: 'x' }))}\n`)), 'genqueue');
      assert.equal(await detectFileFormat(file('gq-ids.jsonl', '{"id":"a","line":1,"queue":"genqueue"}\n')), 'genqueue');
      assert.equal(await detectFileFormat(file('bad.jsonl', '{oops\n')), 'genqueue');
      assert.equal(await detectFileFormat(file('empty.jsonl', '')), 'genqueue');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('chat: developer becomes system, text parts are joined', () => {
    const f = fieldsOf(
      chat('c', {
        messages: [
          { role: 'developer', content: 'Be brief.' },
          { role: 'user', content: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two' }] },
        ],
      }),
    );
    assert.deepEqual(f.messages, [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'one\ntwo' },
    ]);
  });

  it('fields that change nothing are accepted; ignored ones too; the rest are refused, naming the field', () => {
    const ok = completion('k', { prompt: 'x', n: 1, best_of: 1, logprobs: false, echo: false, stream: false, presence_penalty: 0, frequency_penalty: 0, logit_bias: {}, user: 'u', metadata: { a: 1 }, store: false, service_tier: 'auto', stream_options: null, response_format: { type: 'text' } });
    assert.equal(fieldsOf(ok).prompt, 'x');
    const cases: [Record<string, unknown>, RegExp][] = [
      [completion('a', { prompt: 'x', n: 2 }), /^body\.n: only n = 1/],
      [completion('a', { prompt: 'x', logprobs: 5 }), /^body\.logprobs: log probabilities are not returned$/],
      [chat('a', { messages: [{ role: 'user', content: 'x' }], logprobs: true, top_logprobs: 3 }), /^body\.logprobs: .*; body\.top_logprobs: /],
      [completion('a', { prompt: 'x', stream: true }), /^body\.stream: batch requests do not stream$/],
      [chat('a', { messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }), /^body\.tools: tool calling/],
      [completion('a', { prompt: 'x', presence_penalty: 0.5 }), /^body\.presence_penalty: use repetition_penalty/],
      [chat('a', { messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_object' } }), /^body\.response_format: /],
      [completion('a', { prompt: 'x', max_tokens_typo: 3 }), /^body: unknown field\(s\) "max_tokens_typo"$/],
      [completion('a', { prompt: ['x', 'y'] }), /^body\.prompt: must be one non-empty string/],
      [completion('a', { messages: [] }), /^body\.messages: belongs to \/v1\/chat\/completions/],
      [chat('a', { messages: [{ role: 'tool', content: 'x' }] }), /^body\.messages\.0\.role: /],
      [chat('a', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }), /^body\.messages\.0\.content: /],
      [chat('a', { messages: [] }), /^body\.messages: must hold at least one message$/],
      [completion('a', { prompt: 'x', temperature: 3 }), /^body\.temperature: /],
      [completion('a', { prompt: 'x', max_tokens: 0 }), /^body\.max_tokens: /],
      [{ ...completion('a', { prompt: 'x' }), url: '/v1/embeddings' }, /^url: "\/v1\/embeddings" is not supported \(supported: \/v1\/completions, \/v1\/chat\/completions\)$/],
      [{ ...completion('a', { prompt: 'x' }), method: 'GET' }, /^method: must be "POST"$/],
      [{ ...completion('a', { prompt: 'x' }), extra: 1 }, /^unknown field\(s\) "extra"$/],
      [{ method: 'POST', url: '/v1/completions', body: { prompt: 'x' } }, /^custom_id: /],
    ];
    for (const [line, expected] of cases) assert.match(errorOf(line), expected, JSON.stringify(line));
    const refused = parseOpenAiRequest(completion('named', { prompt: 'x', n: 3 }));
    assert.equal(!refused.ok && refused.customId, 'named', 'a refusal keeps the custom_id for the error line');
  });

  it('custom_ids become stable job ids; duplicates and bad JSON are refused by line', async () => {
    assert.equal(jobIdForCustomId('request-1'), 'request-1');
    assert.match(jobIdForCustomId('17'), /^openai-[0-9a-f]{40}$/);
    assert.equal(jobIdForCustomId('a:b'), jobIdForCustomId('a:b'));
    assert.notEqual(jobIdForCustomId('a:b'), jobIdForCustomId('a:c'));
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-oai-'));
    try {
      const file = join(dir, 'b.jsonl');
      writeFileSync(file, [JSON.stringify(completion('x', { prompt: 'a' })), '{oops', '', JSON.stringify(completion('x', { prompt: 'b' }))].join('\n'));
      const lines = [];
      for await (const l of readOpenAiBatch(file)) lines.push(l);
      assert.deepEqual(
        lines.map((l) => [l.lineNumber, l.parsed.ok ? 'ok' : l.parsed.error.split(' (')[0]]),
        [
          [1, 'ok'],
          [2, 'not valid JSON'],
          [4, 'custom_id: "x" repeats line 1'],
        ],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('genqueue results → OpenAI Batch output lines', () => {
  const result: JobResult = {
    id: 'request-1',
    model: 'gpt2-tiny',
    prompt: 'Hello',
    promptTokenIds: [15496, 995],
    tokenIds: [11, 12, 13],
    text: ' a b',
    finishReason: 'length',
    usage: { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 },
    timings: { queuedAt: 1_700_000_000_000, startedAt: 1_700_000_000_100, finishedAt: 1_700_000_001_500, tokenizeMs: 1, generateMs: 10, batchSize: 1, tokensPerSecond: 300, workerId: 'w', device: 'cpu' },
  };
  const ref = (endpoint: 'chat' | 'completions'): OpenAiRequestRef => ({ id: 'request-1', customId: 'request-1', endpoint });

  it('a completed chat request is a chat.completion with the message and usage', () => {
    const out = openAiOutputLine(ref('chat'), { id: 'request-1', status: 'completed', result });
    assert.equal(out?.file, 'out');
    const line = OutputLine.parse(JSON.parse(out!.line));
    assert.equal(line.custom_id, 'request-1');
    assert.deepEqual(line.response.body.choices[0]!.message, { role: 'assistant', content: ' a b' });
    assert.equal(line.response.body.object, 'chat.completion');
    assert.equal(line.response.body.created, 1_700_000_001);
    assert.equal(line.response.body.model, 'gpt2-tiny');
    assert.deepEqual(line.response.body.usage, { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });
    assert.equal(openAiOutputLine(ref('chat'), { id: 'request-1', status: 'completed', result })!.line, out!.line, 'the same job gives the same line');
  });

  it('a completed completion request is a text_completion with text', () => {
    const line = OutputLine.parse(JSON.parse(openAiOutputLine(ref('completions'), { id: 'request-1', status: 'completed', result })!.line));
    assert.equal(line.response.body.object, 'text_completion');
    assert.deepEqual(line.response.body.choices[0], { index: 0, text: ' a b', logprobs: null, finish_reason: 'length' });
  });

  it('failures go to the error file as OpenAI writes them; pending jobs are not written yet', () => {
    const failed = openAiOutputLine(ref('chat'), { id: 'request-1', status: 'failed', error: 'boom' });
    assert.equal(failed?.file, 'errors');
    const f = JSON.parse(failed!.line) as { response: { status_code: number; body: { error: { message: string; type: string } } }; error: null };
    assert.equal(f.response.status_code, 500);
    assert.deepEqual(f.response.body.error, { message: 'boom', type: 'server_error', param: null, code: null });
    const tooLong = JSON.parse(openAiOutputLine(ref('chat'), { id: 'request-1', status: 'failed', error: 'too long', content: true })!.line) as typeof f;
    assert.equal(tooLong.response.status_code, 400, "a job refused for its content is the caller's error");
    assert.deepEqual(tooLong.response.body.error, { message: 'too long', type: 'invalid_request_error', param: null, code: null });
    const cancelled = JSON.parse(openAiOutputLine(ref('chat'), { id: 'request-1', status: 'cancelled' })!.line) as { custom_id: string; response: null; error: { code: string } };
    assert.deepEqual([cancelled.custom_id, cancelled.response, cancelled.error.code], ['request-1', null, 'batch_cancelled']);
    const missing = JSON.parse(openAiOutputLine(ref('chat'), { id: 'request-1', status: 'missing', error: 'not in Redis' })!.line) as { response: null; error: { code: string } };
    assert.equal(missing.response, null);
    assert.equal(missing.error.code, 'job_not_found');
    assert.equal(openAiOutputLine(ref('chat'), { id: 'request-1', status: 'pending' }), undefined);
    const refused = JSON.parse(openAiRefusedLine('r-9', 9, 'body.n: only n = 1').line) as { custom_id: string; error: { message: string } };
    assert.deepEqual([refused.custom_id, refused.error.message], ['r-9', 'line 9: body.n: only n = 1']);
    const nameless = JSON.parse(openAiRefusedLine(undefined, 3, 'not valid JSON').line) as { custom_id: null };
    assert.equal(nameless.custom_id, null, 'a line without a custom_id is still accounted for');
  });

  it('a resumed run finds the custom_ids already written; a line cut by an interruption is removed, a whole one ended', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-oai-'));
    try {
      const out = join(dir, 'out.jsonl');
      const errors = join(dir, 'errors.jsonl');
      const whole = `${JSON.stringify({ custom_id: 'a' })}\n${JSON.stringify({ custom_id: 'b' })}\n`;
      writeFileSync(out, `${whole}{"id":"batch_req_1","custom_id":"c","respo`);
      assert.deepEqual([...(await writtenCustomIds([out, errors]))].sort(), ['a', 'b']);
      repairLastLine(out);
      assert.equal(readFileSync(out, 'utf8'), whole, 'the cut line is gone: its request is written again');
      repairLastLine(out); // already ended: unchanged
      assert.equal(readFileSync(out, 'utf8'), whole);
      writeFileSync(errors, `${whole}${JSON.stringify({ custom_id: 'd' })}`);
      assert.ok((await writtenCustomIds([errors])).has('d'), 'a whole line without its newline counts as written');
      repairLastLine(errors);
      assert.equal(readFileSync(errors, 'utf8'), `${whole}${JSON.stringify({ custom_id: 'd' })}\n`);
      const single = join(dir, 'single.jsonl');
      writeFileSync(single, `{"custom_id": "e", "x": "${'y'.repeat(100_000)}`); // one cut line longer than a read block
      repairLastLine(single);
      assert.equal(readFileSync(single, 'utf8'), '');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('OpenAI Batch completions through the queue (vLLM-shaped file, real worker)', () => {
  let dir: string;
  let redis: TestRedis;
  let worker: StartedWorker;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-oai-e2e-'));
    redis = await startTestRedis();
    const config = { ...loadConfig({ env: {} }), cacheDir: join(dir, 'cache') };
    const model = await new ModelCache(join(dir, 'cache')).resolve(fixturePath('gpt2-tiny'));
    worker = await startWorker(config, { ...model, name: 'gpt2-tiny' }, { redisUrl: redis.url, maxBatch: 8, maxWaitMs: 20 }, pino({ level: 'silent' }));
  });
  after(async () => {
    await worker.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every request gets one output line or one error line, keyed by custom_id', async () => {
    const file = join(dir, 'batch.jsonl');
    const lines = [
      completion('req-1', { model: 'gpt2-tiny', prompt: 'Hello world', max_tokens: 4, temperature: 0 }),
      completion('2', { model: 'gpt2-tiny', prompt: 'Once upon a time', max_tokens: 3, temperature: 0 }),
      completion('req-3', { model: 'gpt2-tiny', prompt: 'Too long', max_tokens: 500, temperature: 0 }),
    ];
    writeFileSync(file, `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);
    const refs: (OpenAiRequestRef & { queue: string })[] = [];
    const jobs = [];
    for await (const { parsed } of readOpenAiBatch(file)) {
      assert.ok(parsed.ok);
      jobs.push(jobFromFields({ ...parsed.fields }));
      refs.push({ ...parsed.ref, queue: queueNameFor(parsed.fields.model) });
    }
    const producer = new JobProducer({ connection: redis.connection });
    await producer.enqueueJobs(jobs);
    await producer.close();
    const byId = new Map(refs.map((r) => [r.id, r]));
    const written = { out: [] as string[], errors: [] as string[] };
    for await (const r of new ResultCollector({ connection: redis.connection }).collect(refs, { wait: true, timeoutMs: 120_000 })) {
      const o = openAiOutputLine(byId.get(r.id)!, r);
      if (o) written[o.file].push(o.line);
    }
    assert.equal(written.out.length, 2);
    const outs = written.out.map((l) => OutputLine.parse(JSON.parse(l)));
    assert.deepEqual(outs.map((o) => o.custom_id).sort(), ['2', 'req-1']);
    for (const o of outs) {
      const expected = o.custom_id === 'req-1' ? 4 : 3;
      assert.equal(o.response.body.usage.completion_tokens, expected);
      assert.equal(o.response.body.model, 'gpt2-tiny');
    }
    assert.equal(written.errors.length, 1);
    const e = JSON.parse(written.errors[0]!) as { custom_id: string; response: { body: { error: { message: string } } } };
    assert.equal(e.custom_id, 'req-3');
    assert.match(e.response.body.error.message, /exceeds the model's context length/);
  });
});
