/** A request the slot engine refuses before it takes a slot; `field` names the request field at fault. */
export class SlotRequestError extends Error {
  override readonly name: string = 'SlotRequestError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/** A prompt (with its max_new_tokens) longer than a slot holds; the message carries both numbers. */
export class SlotCapacityError extends SlotRequestError {
  override readonly name = 'SlotCapacityError';
  constructor(
    readonly promptTokens: number,
    readonly maxNewTokens: number,
    readonly capacity: number,
  ) {
    super(
      'promptIds',
      `prompt (${promptTokens} tokens) + max_new_tokens (${maxNewTokens}) = ${promptTokens + maxNewTokens} exceeds the slot capacity ${capacity}`,
    );
  }
}

/** The engine was closed (or its thread could not start) before the request ended. */
export class SlotEngineClosedError extends Error {
  override readonly name = 'SlotEngineClosedError';
  constructor(message = 'slot engine is closed') {
    super(message);
  }
}

/** The native loop failed while the request was in it (its message is ONNX Runtime's or the addon's). */
export class SlotLoopError extends Error {
  override readonly name = 'SlotLoopError';
}
