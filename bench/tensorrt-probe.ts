import * as ort from 'onnxruntime-node';
import type { BenchRow } from './bench-types.js';

/**
 * Tries the TensorRT execution provider alone on the given model. Where libnvinfer is absent (our H100 machine)
 * the row records "unavailable" with ONNX Runtime's error; the engine's own tensorrt:N path falls back to CUDA.
 */
export async function tensorrtRow(modelPath: string, deviceId: number): Promise<BenchRow> {
  try {
    const s = await ort.InferenceSession.create(modelPath, { executionProviders: [{ name: 'tensorrt', deviceId }] });
    await s.release();
    return { name: 'tensorrt', batch: 1, status: 'failed', note: 'the TensorRT provider loaded; timing it is not implemented in this run' };
  } catch (e) {
    return { name: 'tensorrt', batch: 1, status: 'unavailable', error: (e as Error).message.split('\n')[0]!.slice(0, 400) };
  }
}
