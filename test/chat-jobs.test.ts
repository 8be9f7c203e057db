import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { z } from 'zod';
import { ThreadedGenerator } from '../src/engine/threaded-generator.js';
import { readManifest } from '../src/model/manifest.js';
import { buildModel } from '../src/model/model-builder.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields, parseJob } from '../src/queue/job-schema.js';
import { type CollectedResult, ResultCollector } from '../src/queue/result-collector.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { GenerationWorker } from '../src/worker/generation-worker.js';
import { fixtureCheckpoint, fixtureReference } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';
import { testDevice } from './harness/test-device.js';

const Chat = z.object({ chat: z.array(z.object({ messages: z.array(z.object({ role: z.string(), content: z.string() })), text: z.string(), ids: z.array(z.number()) })) });

describe('job schema: prompt or messages', () => {
  it('takes exactly one of them', () => {
    assert.equal(parseJob({ messages: [{ role: 'user', content: 'hi' }] }).ok, true);
    assert.match((parseJob({ prompt: 'a', messages: [{ role: 'user', content: 'hi' }] }) as { error: string }).error, /prompt: give exactly one of prompt or messages/);
    assert.match((parseJob({ max_new_tokens: 3 }) as { error: string }).error, /give exactly one of prompt or messages/);
    assert.match((parseJob({ messages: [] }) as { error: string }).error, /messages: must not be empty/);
    assert.match((parseJob({ messages: [{ role: 'user', text: 'hi' }] }) as { error: string }).error, /messages\.0/);
  });
});

/** One worker per model on one Redis: a chat model (Llama-shaped, small BPE with a template) and GPT-2 (none). */
describe('chat jobs through the queue', () => {
  let redis: TestRedis;
  const dirs: string[] = [];
  const engines: ThreadedGenerator[] = [];
  const workers: GenerationWorker[] = [];

  const startWorker = async (fixture: string, modelName: string): Promise<void> => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-chat-'));
    dirs.push(dir);
    buildModel(fixtureCheckpoint(fixture), dir, { precision: 'fp32' });
    const engine = await ThreadedGenerator.open(dir, { device: testDevice() });
    engines.push(engine);
    const worker = new GenerationWorker({
      connection: redis.connection,
      engine,
      tokenizer: TextTokenizer.fromModelDir(dir, readManifest(dir).files),
      modelName,
      maxBatch: 4,
      maxWaitMs: 50,
      workerId: `chat-${modelName}`,
      logger: pino({ level: 'silent' }),
    });
    workers.push(worker);
    worker.start();
  };

  before(async () => {
    redis = await startTestRedis();
    await startWorker('llama-linear-tiny', 'chat');
    await startWorker('gpt2-tiny', 'plain');
  });
  after(async () => {
    for (const w of workers) await w.close();
    for (const e of engines) await e.close();
    await redis.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('renders messages with the model\'s chat template (HF\'s ids) and refuses them for a model without one', async () => {
    const [conversation] = Chat.parse(fixtureReference('llama-linear-tiny')).chat;
    const producer = new JobProducer({ connection: redis.connection });
    const placed = await producer.enqueueJobs([
      jobFromFields({ id: 'chat-1', messages: conversation!.messages, max_new_tokens: 4, model: 'chat' }),
      jobFromFields({ id: 'chat-refused', messages: conversation!.messages, max_new_tokens: 4, model: 'plain' }),
    ]);
    await producer.close();
    const results = new Map<string, CollectedResult>();
    for await (const r of new ResultCollector({ connection: redis.connection }).collect(placed, { wait: true, timeoutMs: 60_000 })) results.set(r.id, r);
    const ok = results.get('chat-1');
    assert.equal(ok?.status, 'completed', JSON.stringify(ok));
    if (ok?.status === 'completed') {
      assert.deepEqual(ok.result.promptTokenIds, conversation!.ids);
      assert.equal(ok.result.prompt, conversation!.text);
      assert.equal(ok.result.tokenIds.length > 0 || ok.result.finishReason === 'stop', true);
    }
    const refused = results.get('chat-refused');
    assert.equal(refused?.status, 'failed', JSON.stringify(refused));
    assert.match(JSON.stringify(refused), /messages: this model has no chat template/);
  });
});
