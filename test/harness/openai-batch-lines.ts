import { z } from 'zod';

/** The two lines of vLLM's examples/offline_inference/openai_batch/openai_example_batch.jsonl, byte for byte as run_batch reads them. */
export const VLLM_EXAMPLE = [
  '{"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "meta-llama/Meta-Llama-3-8B-Instruct", "messages": [{"role": "system", "content": "You are a helpful assistant."},{"role": "user", "content": "Hello world!"}],"max_completion_tokens": 1000}}',
  '{"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "meta-llama/Meta-Llama-3-8B-Instruct", "messages": [{"role": "system", "content": "You are an unhelpful assistant."},{"role": "user", "content": "Hello world!"}],"max_completion_tokens": 1000}}',
].join('\n');

const Choice = z
  .object({
    index: z.literal(0),
    text: z.string().optional(),
    message: z.object({ role: z.literal('assistant'), content: z.string() }).strict().optional(),
    logprobs: z.null(),
    finish_reason: z.enum(['stop', 'length']),
  })
  .strict();

/** OpenAI's BatchRequestOutput line of a completed request, as clients (the openai SDK, vLLM's run_batch) read it. */
export const OutputLine = z
  .object({
    id: z.string().startsWith('batch_req_'),
    custom_id: z.string(),
    response: z
      .object({
        status_code: z.literal(200),
        request_id: z.string(),
        body: z
          .object({
            id: z.string(),
            object: z.enum(['text_completion', 'chat.completion']),
            created: z.number().int(),
            model: z.string(),
            choices: z.array(Choice).length(1),
            usage: z.object({ prompt_tokens: z.number().int(), completion_tokens: z.number().int(), total_tokens: z.number().int() }).strict(),
          })
          .strict(),
      })
      .strict(),
    error: z.null(),
  })
  .strict();

/** An error line: a failed request (response with status and body.error) or one without a response (error). */
export const ErrorLine = z
  .object({
    id: z.string().startsWith('batch_req_'),
    custom_id: z.string().nullable(),
    response: z
      .object({
        status_code: z.number().int(),
        request_id: z.string(),
        body: z.object({ error: z.object({ message: z.string(), type: z.string(), param: z.null(), code: z.null() }).strict() }).strict(),
      })
      .strict()
      .nullable(),
    error: z.object({ code: z.string(), message: z.string() }).strict().nullable(),
  })
  .strict();
