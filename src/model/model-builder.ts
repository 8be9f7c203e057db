import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { DecoderArchitecture, DecoderGraph, DecoderVariant } from './architectures/architecture.js';
import { openArchitecture } from './architectures/registry.js';
import { CHECKPOINT_FILES, type HfCheckpoint, openHfCheckpoint } from './checkpoint/hf-checkpoint.js';
import { buildDecoderStep } from './components/decoder-step.js';
import { DEVICE_LOOP_FILES, MODEL_FILES, SEARCH_FILES, SLOT_FILES } from './contract.js';
import { encodeDeviceLoopStepModel } from './device-loop-graph.js';
import { encodeBeamSearchModel, encodeGreedySearchModel, encodeSamplingModel } from './generation-graph.js';
import { encodeSlotDecodeModel, encodeSlotPrefillModel } from './slot-step-graph.js';
import { BUILDER_VERSION, MANIFEST_FILE, type ModelManifest } from './manifest.js';
import type { FloatPrecision } from './onnx/tensor-types.js';
import { WeightFile } from './onnx/weight-file.js';

export interface BuildOptions {
  readonly precision: FloatPrecision;
  /** Cache key recorded in the manifest ('' for a build outside the cache). */
  readonly key?: string;
  readonly name?: string;
}

/** One decoder step of a checkpoint, for tests and tools that run a step graph alone (weights to `weights`). */
export function buildDecoderGraph(checkpoint: HfCheckpoint, options: { precision: FloatPrecision; weights: WeightFile; variant?: DecoderVariant }): DecoderGraph {
  return buildDecoderStep(openArchitecture(checkpoint), checkpoint, options);
}

/**
 * Builds an ONNX model directory from a Hugging Face checkpoint: one weight file, one small graph per search
 * operator (greedy, beam, sampling) and per device-loop step that all reference it, the tokenizer, and a
 * manifest the engine loads. Which steps exist follows the architecture's declared capabilities.
 */
export function buildModel(checkpointDir: string, outDir: string, options: BuildOptions): ModelManifest {
  const started = performance.now();
  const checkpoint = openHfCheckpoint(checkpointDir);
  const arch: DecoderArchitecture = openArchitecture(checkpoint);
  const caps = arch.capabilities;
  const weights = new WeightFile(join(outDir, MODEL_FILES.weights));
  const { precision } = options;
  const build = (variant: DecoderVariant): DecoderGraph => buildDecoderStep(arch, checkpoint, { precision, weights, variant });
  // The CUDA device-loop steps in fp16 use the addon's own operators (native/), which read fp16 only.
  const fp16 = precision === 'fp16';
  let decoder: DecoderGraph;
  let sharedKvDecoder: DecoderGraph | undefined;
  let samplingDecoder: DecoderGraph;
  let staticDecoder: DecoderGraph | undefined;
  let staticCpuDecoder: DecoderGraph | undefined;
  let smallBatchDecoder: DecoderGraph | undefined;
  let slotDecoder: DecoderGraph | undefined;
  try {
    decoder = build({ kvCache: 'growing', logits: 'last' });
    if (caps.sharedKvSearch) sharedKvDecoder = build({ kvCache: 'shared', logits: 'last' });
    samplingDecoder = build({ kvCache: 'growing', logits: 'sample' });
    if (caps.deviceLoop) {
      staticCpuDecoder = build({ kvCache: 'static-cpu', logits: 'last' });
      staticDecoder = caps.maskedDecodeAttention ? build({ kvCache: 'static', logits: 'last' }) : staticCpuDecoder;
      if (fp16 && caps.smallBatchStep) smallBatchDecoder = build({ kvCache: caps.maskedDecodeAttention ? 'static' : 'static-cpu', logits: 'last', matmul: 'small-batch' });
      slotDecoder = build({ kvCache: 'slots', logits: 'last' });
    }
  } finally {
    weights.close();
  }
  writeFileSync(join(outDir, SEARCH_FILES.greedy), encodeGreedySearchModel(decoder));
  if (sharedKvDecoder) writeFileSync(join(outDir, SEARCH_FILES.greedyShared), encodeGreedySearchModel(sharedKvDecoder));
  writeFileSync(join(outDir, SEARCH_FILES.beam), encodeBeamSearchModel(decoder));
  writeFileSync(join(outDir, SEARCH_FILES.sample), encodeSamplingModel(samplingDecoder));
  if (staticDecoder) writeFileSync(join(outDir, DEVICE_LOOP_FILES.cuda), encodeDeviceLoopStepModel(staticDecoder, { tail: fp16 ? 'genqueue' : 'onnx' }));
  if (staticCpuDecoder) writeFileSync(join(outDir, DEVICE_LOOP_FILES.cpu), encodeDeviceLoopStepModel(staticCpuDecoder));
  if (smallBatchDecoder) writeFileSync(join(outDir, DEVICE_LOOP_FILES.cudaSmallBatch), encodeDeviceLoopStepModel(smallBatchDecoder, { tail: 'genqueue' }));
  if (slotDecoder) {
    writeFileSync(join(outDir, SLOT_FILES.decode), encodeSlotDecodeModel(slotDecoder));
    writeFileSync(join(outDir, SLOT_FILES.prefill), encodeSlotPrefillModel(slotDecoder));
  }
  copyFileSync(checkpoint.tokenizerPath, join(outDir, MODEL_FILES.tokenizer));
  // The chat template and special tokens, for jobs that send messages.
  const copied = (from: string, to: string): boolean => {
    const source = join(checkpoint.dir, from);
    if (!existsSync(source)) return false;
    copyFileSync(source, join(outDir, to));
    return true;
  };
  const hasTokenizerConfig = copied(CHECKPOINT_FILES.tokenizerConfig, MODEL_FILES.tokenizerConfig);
  const hasChatTemplate = copied(CHECKPOINT_FILES.chatTemplate, MODEL_FILES.chatTemplate);
  const manifest: ModelManifest = {
    builderVersion: BUILDER_VERSION,
    key: options.key ?? '',
    name: options.name ?? basename(resolve(checkpointDir)),
    sourceDir: resolve(checkpointDir),
    spec: { ...decoder.spec, eosTokenIds: [...decoder.spec.eosTokenIds] },
    capabilities: caps,
    files: {
      greedy: SEARCH_FILES.greedy,
      ...(sharedKvDecoder ? { greedyShared: SEARCH_FILES.greedyShared } : {}),
      beam: SEARCH_FILES.beam,
      sample: SEARCH_FILES.sample,
      ...(staticDecoder ? { deviceLoop: DEVICE_LOOP_FILES.cuda } : {}),
      ...(staticCpuDecoder ? { deviceLoopCpu: DEVICE_LOOP_FILES.cpu } : {}),
      ...(smallBatchDecoder ? { deviceLoopSmallBatch: DEVICE_LOOP_FILES.cudaSmallBatch } : {}),
      ...(slotDecoder ? { slotDecode: SLOT_FILES.decode, slotPrefill: SLOT_FILES.prefill } : {}),
      weights: MODEL_FILES.weights,
      tokenizer: MODEL_FILES.tokenizer,
      ...(hasTokenizerConfig ? { tokenizerConfig: MODEL_FILES.tokenizerConfig } : {}),
      ...(hasChatTemplate ? { chatTemplate: MODEL_FILES.chatTemplate } : {}),
    },
    decoderNodes: decoder.nodeCount,
    weightBytes: weights.bytesWritten,
    buildSeconds: (performance.now() - started) / 1000,
  };
  writeFileSync(join(outDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
  return manifest;
}
