import { pino, type Logger } from 'pino';

/** Logs go to stderr so that stdout carries only command output (JSON lines, results). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2));
}
