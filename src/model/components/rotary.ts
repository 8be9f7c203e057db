/** Rotary position embedding parameters, as HF's rope types define them. */
export interface RopeSpec {
  readonly type: 'default' | 'linear' | 'llama3' | 'dynamic';
  readonly theta: number;
  /** Rotated dimensions per head (the head size for Llama, Mistral and Qwen2). */
  readonly dim: number;
  readonly factor?: number | undefined;
  /** llama3: the band limits. */
  readonly lowFreqFactor?: number | undefined;
  readonly highFreqFactor?: number | undefined;
  /** llama3: the context the unscaled model had; dynamic: the length past which the base grows. */
  readonly originalMaxPositions?: number | undefined;
}
