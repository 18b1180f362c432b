import { redact } from '../config/redact.js';
import { jsonLogger } from './json-log.js';

/**
 * All console output goes through here, so every line is redacted: a
 * secret that slipped into an error message from a library still never
 * reaches the terminal or a log file.
 */
export const out = {
  /** Results: what a command was asked for (stdout). */
  result(line: string): void {
    process.stdout.write(`${redact(line)}\n`);
  },
  /**
   * Progress and notes (stderr), so stdout stays parseable. `fields` are
   * added to the JSON line with `--log-format json` (numbers a log shipper
   * can graph) and ignored in text.
   */
  info(line: string, fields?: Record<string, unknown>): void {
    const json = jsonLogger();
    if (json) return void (fields ? json.info(fields, redact(line)) : json.info(redact(line)));
    process.stderr.write(`${redact(line)}\n`);
  },
  /** An error line (stderr). */
  error(line: string): void {
    const json = jsonLogger();
    if (json) return void json.error(redact(line));
    process.stderr.write(`bucket-migrate: ${redact(line)}\n`);
  },
};

/** Formats a rate with a sensible number of digits. */
export function formatRate(perSecond: number): string {
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1);
}

/** Formats a duration in seconds as 1h02m03s / 2m03s / 3.4s. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m${String(s).padStart(2, '0')}s` : `${m}m${String(s).padStart(2, '0')}s`;
}

/** A byte count as people write it: 5GiB, 256MiB, 1.5KiB, 100B. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= size) {
      const n = bytes / size;
      return `${Number.isInteger(n) ? n : n.toFixed(1)}${unit}`;
    }
  }
  return `${bytes}B`;
}
