/**
 * A worker fails a job whose content is wrong (invalid data, another model than its own, a prompt too long for the
 * limit or the context, messages its chat template refuses) with this prefix on the BullMQ failed reason. Retrying
 * such a job cannot help, and an OpenAI Batch error line reports it as the caller's (status 400) rather than the
 * server's (500). The collector strips the prefix and reports `content: true`, so results read as before.
 */
export const CONTENT_FAILURE_PREFIX = 'refused: ';

export function contentFailureReason(message: string): string {
  return `${CONTENT_FAILURE_PREFIX}${message}`;
}

/** A failed reason as the collector reports it: the message, and whether the job's content was the cause. */
export function readFailureReason(reason: string): { error: string; content: boolean } {
  return reason.startsWith(CONTENT_FAILURE_PREFIX) ? { error: reason.slice(CONTENT_FAILURE_PREFIX.length), content: true } : { error: reason, content: false };
}
