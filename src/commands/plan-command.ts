import { Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import { configFrom, withConfigOptions } from './options.js';

export function planCommand(): Command {
  return withConfigOptions(
    new Command('plan')
      .summary('snapshot the table into the ledger, one row per legacy key')
      .description(
        'Snapshot every table row whose path starts with SOURCE_PREFIX into the ledger (one row per key, with the ids\n' +
          'that reference it), creating the ledger schema if needed. Idempotent: re-running adds only what is new.',
      )
      .option('--list', 'also list the source prefix: record size/ETag per key, mark absent keys missing, add orphan objects', false)
      .option('--inventory <manifest>', 'like --list, but read an S3 Inventory report (s3://bucket/path/manifest.json, CSV) instead of listing')
      .addOption(new Option('--orphans <mode>', 'with --list or --inventory: objects no row references are moved too, or skipped').choices(['move', 'skip']).default('move'))
      .option('--json', 'print the result as one JSON document', false)
      .addHelpText('after', '\nExamples:\n  bucket-migrate plan\n  bucket-migrate plan --list --orphans skip\n  bucket-migrate plan --inventory s3://inventory-bucket/legacy-s3/daily/2026-12-01T00-00Z/manifest.json'),
  ).action(async (options, command: Command) => {
    if (!options.list && !options.inventory && command.getOptionValueSource('orphans') === 'cli') {
      throw new UsageError('--orphans only applies with --list (orphans are found by listing the source): add --list or drop --orphans');
    }
    if (options.list && options.inventory) throw new UsageError('--list and --inventory are two ways to list the source: give one');
    if (options.inventory) {
      const { parseManifestUrl } = await import('../plan/inventory.js');
      parseManifestUrl(options.inventory);
    }
    // Loaded here, not at start-up: `--help` and the other commands need none of it.
    const { plan } = await import('../plan/plan.js');
    await plan(configFrom(options), { list: options.list, inventory: options.inventory, orphans: options.orphans, json: options.json });
  });
}
