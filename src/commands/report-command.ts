import { Command } from 'commander';
import { configFrom, intOption, withConfigOptions } from './options.js';

/** `bucket-migrate report`: where the migration stands, from the ledger alone. */
export function reportCommand(): Command {
  return withConfigOptions(
    new Command('report')
      .summary('show where the migration stands, from the ledger')
      // Declared like validate's (description, --json, examples): the shape
      // of a commander command, repeated on purpose rather than hidden.
      .description(
        'Read the ledger (during a run, after one, or after a crash) and show:\n' +
          'keys per state and percent settled; throughput overall and per minute\n' +
          'for the last hour; the ETA at the current rate; the attempts\n' +
          'distribution; the top errors; the first 20 failed, conflict, missing,\n' +
          'superseded and archived keys; leases; the last activity; every run.\n' +
          'Read-only: needs only DATABASE_URL and SELECT on the ledger schema.',
      )
      .option('--json', 'print one JSON document (its shape is documented in docs/AUDIT.md)', false)
      .option('--watch', 'refresh until interrupted (with --json: one JSON document per line)', false)
      .option('--interval <s>', 'seconds between refreshes with --watch', intOption('--interval', 1, 3600), 5)
      .addHelpText(
        'after',
        '\nExamples:\n' +
          '  bucket-migrate report\n' +
          '  bucket-migrate report --watch --interval 2\n' +
          "  bucket-migrate report --json | jq '{planned, states, eta: .throughput.etaSeconds}'",
      ),
    ['ledger'],
  ).action(async (options) => {
    const { report } = await import('../report/report.js');
    await report(configFrom(options), {
      json: options.json,
      watch: options.watch,
      intervalSeconds: options.interval,
      tty: process.stdout.isTTY === true,
    });
  });
}
