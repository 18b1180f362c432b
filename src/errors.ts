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

/**
 * One line, naming what to do, for a database error that no retry fixes and
 * that an operator can: a missing privilege, a full disk, a table or column
 * gone from under the run. Undefined for any other error.
 */
export function explainDbError(err: unknown): string | undefined {
  const e = err as { code?: string; message?: string };
  const message = oneLine(e?.message ?? err);
  switch (e?.code) {
    case '42501':
      return `the database refused: ${message}; grant the privileges in docs/PRIVILEGES.md, then run the same command again to resume`;
    case '53100':
      return `the database is out of disk space (${message}); free some, then run the same command again to resume`;
    case '42P01':
    case '42703':
      return `the database no longer has what this run uses (${message}): was the table or the ledger changed during the run?`;
    default:
      return undefined;
  }
}
