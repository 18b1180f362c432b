import { pino, type Logger } from 'pino';

let logger: Logger | undefined;

/**
 * Switches `out.info`/`out.error` to one JSON object per line on stderr
 * (`--log-format json`), for log shippers: `level`, `time` (ISO),
 * `msg`, plus `fields` (the command and process id; the run id once it is
 * known, see {@link addLogFields}). Results on stdout are not affected.
 * The destination is synchronous so that no line is lost when the process
 * exits right after writing it.
 */
export function enableJsonLogs(fields: Record<string, unknown>): void {
  logger = pino(
    { base: { pid: process.pid, ...fields }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ dest: 2, sync: true }),
  );
}

/** Adds fields (e.g. `run_id`) to every later JSON line; a no-op with text logs. */
export function addLogFields(fields: Record<string, unknown>): void {
  if (logger) logger = logger.child(fields);
}

/** The JSON logger when `--log-format json` is on. */
export function jsonLogger(): Logger | undefined {
  return logger;
}

/**
 * Turns JSON logs on before the command line is parsed when it asks for
 * them (`--log-format json` or `--log-format=json`), so that even a
 * rejected flag or a bad setting is reported as a JSON line: with JSON logs
 * stderr carries nothing else. Returns whether it did.
 */
export function enableJsonLogsFromArgv(argv: string[]): boolean {
  const args = argv.slice(2);
  const at = args.findIndex((a) => a === '--log-format' || a.startsWith('--log-format='));
  if (at === -1) return false;
  const value = args[at]!.includes('=') ? args[at]!.split('=')[1] : args[at + 1];
  if (value !== 'json') return false;
  const command = args.find((a) => !a.startsWith('-'));
  enableJsonLogs({ command: command ?? null });
  return true;
}
