import type { DecoderGraph } from './architectures/architecture.js';
import { SAMPLING_INPUTS } from './contract.js';
import { GraphBuilder, encodeModel } from './onnx/graph-builder.js';

const PRODUCER = 'genqueue';

/**
 * Wraps a decoder step in com.microsoft GreedySearch: the whole decode loop (KV cache, argmax, EOS handling)
 * runs inside ONNX Runtime, so one run() turns a left-padded batch into finished sequences.
 * Inputs: input_ids [B,S] int32, max_length/min_length [1] int32, repetition_penalty [1] float,
 * attention_mask [B,S] int32 (0 on left padding). Output: sequences [B, max_length] int32 (prompt included).
 */
export function encodeGreedySearchModel(decoder: DecoderGraph): Uint8Array {
  return encodeGreedyLoop(decoder, 'greedy_search', false);
}

/**
 * GreedySearch over a decoder built with the sampling head: the same inputs as greedy plus
 * sample_temperature [1] float, sample_top_k [1] int64, sample_top_p [1] float and sample_filter (bool scalar),
 * which the decoder reads from this outer graph.
 */
export function encodeSamplingModel(decoder: DecoderGraph): Uint8Array {
  return encodeGreedyLoop(decoder, 'sampling', true);
}

function encodeGreedyLoop(decoder: DecoderGraph, name: string, sampling: boolean): Uint8Array {
  const g = new GraphBuilder(name);
  const ids = g.input('input_ids', 'int32', ['batch', 'prompt_len']);
  const maxLen = g.input('max_length', 'int32', [1]);
  const minLen = g.input('min_length', 'int32', [1]);
  const rep = g.input('repetition_penalty', 'float32', [1]);
  const mask = g.input('attention_mask', 'int32', ['batch', 'prompt_len']);
  if (sampling) {
    g.input(SAMPLING_INPUTS.temperature, 'float32', [1]);
    g.input(SAMPLING_INPUTS.topK, 'int64', [1]);
    g.input(SAMPLING_INPUTS.topP, 'float32', [1]);
    g.input(SAMPLING_INPUTS.filter, 'bool', []);
  }
  g.output('sequences', 'int32', ['batch', 'max_length']);
  g.msOp('GreedySearch', [ids, maxLen, minLen, rep, '', '', mask], ['sequences'], {
    decoder: { graph: decoder.graph },
    eos_token_id: decoder.spec.eosTokenId,
    pad_token_id: decoder.spec.padTokenId,
    model_type: 0,
  });
  return encodeModel(g.build(), PRODUCER, { search: sampling ? 'sample' : 'greedy' });
}

/**
 * Wraps a decoder step in com.microsoft BeamSearch. Extra inputs: num_beams, num_return_sequences [1] int32,
 * length_penalty [1] float. Outputs: sequences [B, R, max_length], sequences_scores [B, R].
 */
export function encodeBeamSearchModel(decoder: DecoderGraph): Uint8Array {
  const g = new GraphBuilder('beam_search');
  const ids = g.input('input_ids', 'int32', ['batch', 'prompt_len']);
  const maxLen = g.input('max_length', 'int32', [1]);
  const minLen = g.input('min_length', 'int32', [1]);
  const beams = g.input('num_beams', 'int32', [1]);
  const ret = g.input('num_return_sequences', 'int32', [1]);
  const lenPen = g.input('length_penalty', 'float32', [1]);
  const rep = g.input('repetition_penalty', 'float32', [1]);
  const mask = g.input('attention_mask', 'int32', ['batch', 'prompt_len']);
  g.output('sequences', 'int32', ['batch', 'num_return_sequences', 'max_length']);
  g.output('sequences_scores', 'float32', ['batch', 'num_return_sequences']);
  g.msOp('BeamSearch', [ids, maxLen, minLen, beams, ret, lenPen, rep, '', '', mask], ['sequences', 'sequences_scores'], {
    decoder: { graph: decoder.graph },
    eos_token_id: decoder.spec.eosTokenId,
    pad_token_id: decoder.spec.padTokenId,
    model_type: 0,
    early_stopping: 1,
  });
  return encodeModel(g.build(), PRODUCER, { search: 'beam' });
}
