import { Command } from 'commander';
import { out } from '../util/output.js';
import { configFrom, intOption, withConfigOptions } from './options.js';

export function seedCommand(): Command {
  return withConfigOptions(
    new Command('seed')
      .summary('create the table and buckets and fill them with test avatars')
      .description(
        'Create the table (id serial primary key, path varchar) and both buckets if missing, then add --count legacy\n' +
          'avatars under SOURCE_PREFIX and --modern ones under TARGET_PREFIX, each a distinct PNG with a row pointing at it.\n' +
          'Re-running with the same options adds nothing. For test and demo setups, never for production buckets.',
      )
      .option('--count <n>', 'legacy avatars to create', intOption('--count', 0, 100_000_000), 1000)
      .option('--modern <n>', 'modern avatars already under TARGET_PREFIX', intOption('--modern', 0, 100_000_000), 0)
      .option('--awkward', 'also add keys with awkward characters, a 1,024-byte key and a 0-byte object', false)
      .option('--concurrency <n>', 'uploads in flight', intOption('--concurrency', 1, 1024), 64)
      .option('--quiet', 'no progress lines', false)
      .addHelpText('after', '\nExamples:\n  bucket-migrate seed --count 500\n  bucket-migrate seed --count 10000 --modern 1000 --awkward'),
  ).action(async (options) => {
    const { seed } = await import('../seed/seed.js');
    const result = await seed(configFrom(options), {
      count: options.count,
      modern: options.modern,
      awkward: options.awkward,
      concurrency: options.concurrency,
      quiet: options.quiet,
    });
    out.result(`seed: ${result.rowsAdded} rows and ${result.objectsAdded} objects added`);
  });
}
