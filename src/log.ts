/**
 * The shared pino logger. JSON on stderr so that stdout stays free for command output;
 * set MINDEYE_LOG_LEVEL (trace, debug, info, warn, error, silent) to change the level.
 */
import { pino, destination, type Logger } from 'pino';

export const logger: Logger = pino(
  {
    name: 'mindeye-rt',
    level: process.env.MINDEYE_LOG_LEVEL ?? 'info',
    redact: ['token', '*.token', 'headers.authorization'],
  },
  destination(2),
);

export function stageLogger(stage: string, bindings: Record<string, unknown> = {}): Logger {
  return logger.child({ stage, ...bindings });
}
