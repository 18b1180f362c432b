import { Command } from 'commander';
import { requireDatabaseUrl } from '../config/config.js';
import { UsageError } from '../errors.js';
import { out } from '../util/output.js';
import { formatValidate } from '../validate/format-validate.js';
import { CHECKS } from '../validate/validate-types.js';
import { configFrom, intOption, withConfigOptions } from './options.js';

/** `bucket-migrate validate`: proves the end state from the table and the buckets. */
export function validateCommand(): Command {
  return withConfigOptions(
    new Command('validate')
      .summary('prove the end state against the table and the buckets')
      .description(
        'Check the end state from the table and the buckets, not the ledger:\n' +
          '- legacy-rows: no row points under SOURCE_PREFIX (rows of failed,\n' +
          '  conflict, missing and archived keys are known exceptions)\n' +
          '- target-objects: every row under TARGET_PREFIX names an existing\n' +
          '  object of the recorded size and ETag (a streamed merge of the\n' +
          '  sorted listing and the sorted rows: constant memory, no HEAD per key)\n' +
          '- source-empty: nothing is left under SOURCE_PREFIX but known\n' +
          '  exceptions; keys the ledger does not know are "not planned"\n' +
          '- ledger-settled: no key is left pending, copied, db_updated or\n' +
          '  reverting; stale leases are named with their owner\n' +
          'Read-only: SELECT on the table and the ledger, List/Head on both buckets.',
      )
      .option('--json', 'print one JSON document (its shape is documented in docs/AUDIT.md)', false)
      .option('--strict', 'known exceptions (failed, conflict, missing, archived, superseded keys) fail too', false)
      .option('--sample <n>', 'HEAD n random target rows instead of listing the whole target prefix', intOption('--sample', 1, 10_000_000))
      .option('--checks <names>', `comma-separated checks to run (default all: ${Object.values(CHECKS).join(',')})`)
      .option('--concurrency <n>', 'HEAD requests in flight with --sample', intOption('--concurrency', 1, 1024), 16)
      .addHelpText(
        'after',
        '\nExit codes: 0 every check holds; 1 a check failed (the failing keys and\n' +
          'rows are named: the first 100 per check, then a count); 2 usage or\n' +
          'configuration error.\n\nExamples:\n' +
          '  bucket-migrate validate\n' +
          '  bucket-migrate validate --strict --json > validation.json\n' +
          '  bucket-migrate validate --sample 500 --checks target-objects   # a quick look during a run',
      ),
  ).action(async (options, command: Command) => {
    const config = configFrom(options);
    requireDatabaseUrl(config);
    const { parseChecks, validate } = await import('../validate/validate.js');
    const checks = parseChecks(options.checks);
    if (typeof checks === 'string') {
      throw new UsageError(`--checks: unknown check ${JSON.stringify(checks)}; choose from ${Object.values(CHECKS).join(', ')}`);
    }
    const result = await validate(config, {
      strict: options.strict,
      sample: options.sample,
      concurrency: options.concurrency,
      checks,
    });
    if (options.json) out.result(JSON.stringify(result, null, 2));
    else for (const line of formatValidate(result)) out.result(line);
    const code = result.ok ? 0 : 1;
    command.setOptionValue('exitCode', code);
    process.exitCode = code;
  });
}
