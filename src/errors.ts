/**
 * Errors that end a command with a one-line message instead of a stack trace.
 *
 * `UsageError` is for bad flags, environment or configuration: exit code 2.
 * `FatalError` is for a run that cannot go on (a permanent S3 or database
 * failure): exit code 1. Anything else is a bug and is reported as such.
 */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export class FatalError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'FatalError';
    this.exitCode = exitCode;
  }
}

/** The message of anything thrown, as one line. */
export function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message || err.name : String(err);
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
