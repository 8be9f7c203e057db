import type { InferenceSession } from 'onnxruntime-node';

/** Where a session runs: `cpu`, `cuda:N` or `tensorrt:N` (TensorRT falls back to CUDA when it cannot load). */
export type DeviceSpec = { readonly kind: 'cpu' } | { readonly kind: 'cuda' | 'tensorrt'; readonly deviceId: number };

export function parseDevice(text: string): DeviceSpec {
  const t = text.trim().toLowerCase();
  if (t === 'cpu') return { kind: 'cpu' };
  const m = /^(cuda|tensorrt)(?::(\d+))?$/.exec(t);
  if (!m) throw new Error(`device "${text}": expected cpu, cuda:N or tensorrt:N`);
  return { kind: m[1] as 'cuda' | 'tensorrt', deviceId: Number(m[2] ?? 0) };
}

export function formatDevice(d: DeviceSpec): string {
  return d.kind === 'cpu' ? 'cpu' : `${d.kind}:${d.deviceId}`;
}

export function executionProviders(d: DeviceSpec): InferenceSession.ExecutionProviderConfig[] {
  switch (d.kind) {
    case 'cpu':
      return ['cpu'];
    case 'cuda':
      return [{ name: 'cuda', deviceId: d.deviceId }];
    case 'tensorrt':
      return [{ name: 'tensorrt', deviceId: d.deviceId }, { name: 'cuda', deviceId: d.deviceId }];
  }
}
