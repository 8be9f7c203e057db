/** Jobs without a model go to the shared queue, served by every worker with its default model. */
export const DEFAULT_QUEUE = 'genqueue';

/** Jobs naming a model go to that model's queue, served only by workers that loaded it. */
export function queueNameFor(model: string | undefined): string {
  return model ? `${DEFAULT_QUEUE}.${model}` : DEFAULT_QUEUE;
}
