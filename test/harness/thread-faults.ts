/** What crashing-generator-thread.ts reacts to and says (kept apart: importing that entry starts a generator). */
export const CRASH_TOKEN = -70;
export const STARTED_WARNING = 'crashing generator thread started';
