import { copyFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { architectureFor } from './architectures/registry.js';
import { openHfCheckpoint } from './checkpoint/hf-checkpoint.js';
import { DEVICE_LOOP_FILES, encodeDeviceLoopStepModel, fitsSmallBatchStep, hasFusedDecodeAttention } from './device-loop-graph.js';
import { SEARCH_FILES, encodeBeamSearchModel, encodeGreedySearchModel, encodeSamplingModel } from './generation-graph.js';
import { SLOT_FILES, encodeSlotDecodeModel, encodeSlotPrefillModel } from './slot-step-graph.js';
import { BUILDER_VERSION, MANIFEST_FILE, type ModelManifest } from './manifest.js';
import type { FloatPrecision } from './onnx/tensor-types.js';
import { WeightFile } from './onnx/weight-file.js';

export interface BuildOptions {
  readonly precision: FloatPrecision;
  /** Cache key recorded in the manifest ('' for a build outside the cache). */
  readonly key?: string;
  readonly name?: string;
}

const WEIGHTS_FILE = 'decoder.onnx.data';
const TOKENIZER_FILE = 'tokenizer.json';

/**
 * Builds an ONNX model directory from a Hugging Face checkpoint: one weight file, one small graph per search
 * operator (greedy, beam) that all reference it, the tokenizer, and a manifest the engine loads.
 */
export function buildModel(checkpointDir: string, outDir: string, options: BuildOptions): ModelManifest {
  const started = performance.now();
  const checkpoint = openHfCheckpoint(checkpointDir);
  const builder = architectureFor(checkpoint.modelType);
  const weights = new WeightFile(join(outDir, WEIGHTS_FILE));
  let decoder;
  let sharedKvDecoder;
  let samplingDecoder;
  let staticDecoder;
  let staticCpuDecoder;
  let smallBatchDecoder;
  // The CUDA device-loop steps in fp16 use the addon's own operators (native/), which read fp16 only.
  const fp16 = options.precision === 'fp16';
  try {
    decoder = builder.buildDecoder(checkpoint, { precision: options.precision, weights });
    sharedKvDecoder = builder.buildDecoder(checkpoint, { precision: options.precision, weights, variant: { kvCache: 'shared', logits: 'last' } });
    samplingDecoder = builder.buildDecoder(checkpoint, { precision: options.precision, weights, variant: { kvCache: 'growing', logits: 'sample' } });
    staticCpuDecoder = builder.buildDecoder(checkpoint, { precision: options.precision, weights, variant: { kvCache: 'static-cpu', logits: 'last' } });
    const fused = hasFusedDecodeAttention(decoder.spec);
    staticDecoder = fused ? builder.buildDecoder(checkpoint, { precision: options.precision, weights, variant: { kvCache: 'static', logits: 'last' } }) : staticCpuDecoder;
    if (fitsSmallBatchStep(decoder.spec)) {
      smallBatchDecoder = builder.buildDecoder(checkpoint, {
        precision: options.precision,
        weights,
        variant: { kvCache: 'static', logits: 'last', matmul: 'small-batch' },
      });
    }
  } finally {
    weights.close();
  }
  writeFileSync(join(outDir, SEARCH_FILES.greedy), encodeGreedySearchModel(decoder));
  writeFileSync(join(outDir, SEARCH_FILES.greedyShared), encodeGreedySearchModel(sharedKvDecoder));
  writeFileSync(join(outDir, SEARCH_FILES.beam), encodeBeamSearchModel(decoder));
  writeFileSync(join(outDir, SEARCH_FILES.sample), encodeSamplingModel(samplingDecoder));
  writeFileSync(join(outDir, DEVICE_LOOP_FILES.cuda), encodeDeviceLoopStepModel(staticDecoder, { tail: fp16 ? 'genqueue' : 'onnx' }));
  writeFileSync(join(outDir, DEVICE_LOOP_FILES.cpu), encodeDeviceLoopStepModel(staticCpuDecoder));
  if (smallBatchDecoder) writeFileSync(join(outDir, DEVICE_LOOP_FILES.cudaSmallBatch), encodeDeviceLoopStepModel(smallBatchDecoder, { tail: 'genqueue' }));
  writeFileSync(join(outDir, SLOT_FILES.decode), encodeSlotDecodeModel(staticCpuDecoder));
  writeFileSync(join(outDir, SLOT_FILES.prefill), encodeSlotPrefillModel(staticCpuDecoder));
  copyFileSync(checkpoint.tokenizerPath, join(outDir, TOKENIZER_FILE));
  const manifest: ModelManifest = {
    builderVersion: BUILDER_VERSION,
    key: options.key ?? '',
    name: options.name ?? basename(resolve(checkpointDir)),
    sourceDir: resolve(checkpointDir),
    spec: decoder.spec,
    files: {
      greedy: SEARCH_FILES.greedy,
      greedyShared: SEARCH_FILES.greedyShared,
      beam: SEARCH_FILES.beam,
      sample: SEARCH_FILES.sample,
      deviceLoop: DEVICE_LOOP_FILES.cuda,
      deviceLoopCpu: DEVICE_LOOP_FILES.cpu,
      ...(smallBatchDecoder ? { deviceLoopSmallBatch: DEVICE_LOOP_FILES.cudaSmallBatch } : {}),
      slotDecode: SLOT_FILES.decode,
      slotPrefill: SLOT_FILES.prefill,
      weights: WEIGHTS_FILE,
      tokenizer: TOKENIZER_FILE,
    },
    decoderNodes: decoder.nodeCount,
    weightBytes: weights.bytesWritten,
    buildSeconds: (performance.now() - started) / 1000,
  };
  writeFileSync(join(outDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
  return manifest;
}
