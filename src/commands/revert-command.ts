import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { Command } from 'commander';
import { requireDatabaseUrl } from '../config/config.js';
import { enableJsonLogs } from '../util/json-log.js';
import { configFrom, intOption, withConfigOptions } from './options.js';

/** `bucket-migrate revert`: moves migrated keys back to the source. */
export function revertCommand(): Command {
  return withConfigOptions(
    new Command('revert')
      .summary('move migrated keys back: rows to the source key, sources restored, target copies removed')
      .description(
        'Undo execute, key by key. A key whose source is still there (execute --keep-source, or a refused delete)\n' +
          'only has its rows moved back (compare-and-set, by primary key), and its target copy is left. A key whose\n' +
          'source was deleted is copied back from the target first, then its rows move back, then the target copy\n' +
          'is deleted. Every row always names an existing object; safe to kill at any moment and to run again.',
      )
      // Written out here as in execute-command.ts, on purpose (see there).
      .option('--concurrency <n>', 'S3 requests in flight', intOption('--concurrency', 1, 1024), 32)
      .option('--batch-size <n>', 'ledger rows per claim', intOption('--batch-size', 1, 10_000), 200)
      .option('--limit <n>', 'revert at most this many keys, then stop (0: all)', intOption('--limit', 0, 2_000_000_000), 0)
      .option('--lease-seconds <n>', 'a claim not renewed for this long is taken over', intOption('--lease-seconds', 2, 86_400), 120)
      .option('--max-attempts <n>', 'failures of one key before revert gives up on it', intOption('--max-attempts', 1, 1000), 5)
      .option('--backoff-seconds <n>', 'first wait before a failed key is retried (doubles each time)', intOption('--backoff-seconds', 0, 3600), 2)
      .option('--delete-unguarded', 'delete target copies even without a guard (no trigger, no index on the path column): rows the application writes during the revert may then name deleted objects', false)
      .option('--retry-failed', 'give keys revert gave up on a fresh budget before starting', false)
      .option('--quiet', 'no progress output', false)
      .option('--metrics-port <port>', 'serve Prometheus metrics on http://<metrics-host>:<port>/metrics while the run lasts (0: any free port)', intOption('--metrics-port', 0, 65_535))
      .option('--metrics-host <address>', 'address the metrics server listens on (0.0.0.0: every interface)', '127.0.0.1')
      .addHelpText(
        'after',
        '\nExit codes: 0 every key claimed was reverted; 1 a key could not be reverted (listed) or a fatal error;\n2 usage or configuration error, or an execute is running on this ledger; 130/143 interrupted (run again to resume).\n\n' +
          'Examples:\n  bucket-migrate revert --limit 10     # a canary\n  bucket-migrate revert                # everything migrated\n  bucket-migrate revert --retry-failed',
      ),
  ).action(async (options, command: Command) => {
    const processId = `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    if (options.logFormat === 'json') enableJsonLogs({ command: 'revert', process_id: processId });
    const migrate = configFrom(options);
    requireDatabaseUrl(migrate);
    const { revert } = await import('../revert/revert.js');
    const code = await revert({
      migrate,
      concurrency: options.concurrency,
      batchSize: options.batchSize,
      leaseSeconds: options.leaseSeconds,
      maxAttempts: options.maxAttempts,
      backoffSeconds: options.backoffSeconds,
      limit: options.limit,
      retryFailed: options.retryFailed,
      quiet: options.quiet,
      deleteUnguarded: options.deleteUnguarded,
      processId,
      metricsPort: options.metricsPort,
      metricsHost: options.metricsHost,
    });
    command.setOptionValue('exitCode', code);
    process.exitCode = code;
  });
}
