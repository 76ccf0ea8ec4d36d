import pino from 'pino';

/**
 * Flotilla's structured logger: JSON lines on stderr, a fixed message per event and the facts
 * in fields (`job`, `namespace`, `round`, `site`, `reconcileID`, `durationMs`). Never log
 * secrets or tensors.
 *
 * The level comes from `FLOTILLA_LOG_LEVEL` (default `info`).
 */
export type Logger = pino.Logger;

/** createLogger makes a logger for one component (`aggregator`, `trainer`, `engine`, ...). */
export function createLogger(
  component: string,
  destination: NodeJS.WritableStream = process.stderr,
): Logger {
  return pino(
    {
      level: process.env.FLOTILLA_LOG_LEVEL ?? 'info',
      base: { component },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination as pino.DestinationStream,
  );
}
