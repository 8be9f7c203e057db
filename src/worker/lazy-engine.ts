import type { GenerationBatchResult, GenerationRequest } from '../engine/generation-types.js';
import type { TextGenerationEngine } from '../engine/text-generation-engine.js';
import type { ModelManifest } from '../model/manifest.js';

/**
 * The search ops beside the slot engine, opened on the first job that needs them (beam search): a worker on the slot
 * engine that never sees a beam job never holds their sessions (or their device memory). Once opened they stay
 * open; an open that fails is tried again by the next job.
 */
export class LazyEngine implements TextGenerationEngine {
  private opening: Promise<TextGenerationEngine> | undefined;
  private opened: TextGenerationEngine | undefined;
  private closed: Promise<void> | undefined;

  constructor(
    private readonly open: () => Promise<TextGenerationEngine>,
    readonly manifest: ModelManifest,
    /** The device until the engine is open (then the engine's own description). */
    private readonly plannedDevice: string,
  ) {}

  get device(): string {
    return this.opened?.device ?? this.plannedDevice;
  }

  /** Whether the engine has been opened. */
  get isOpen(): boolean {
    return this.opened !== undefined;
  }

  async generate(requests: readonly GenerationRequest[]): Promise<GenerationBatchResult> {
    if (this.closed) throw new Error('engine is closed');
    this.opening ??= this.open().then(
      (engine) => (this.opened = engine),
      (e: unknown) => {
        this.opening = undefined;
        throw e;
      },
    );
    const engine = await this.opening;
    if (this.closed) throw new Error('engine is closed');
    return engine.generate(requests);
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      const engine = await this.opening?.catch(() => undefined);
      await engine?.close();
    })();
    return this.closed;
  }
}
