import { Command } from 'commander';
import { requireDatabaseUrl } from '../config/config.js';
import { checkConnection, createDatabase } from '../db/database.js';
import { migrateLedger } from '../db/migrate.js';
import { out } from '../util/output.js';
import { configFrom, withConfigOptions } from './options.js';

export function migrateCommand(): Command {
  return withConfigOptions(
    new Command('migrate')
      .summary("create or update the ledger schema (plan does this too)")
      .description("Apply the ledger schema's migrations to the ledger schema (LEDGER_SCHEMA, default bucket_migrate).")
      .addHelpText('after', '\nExample:\n  bucket-migrate migrate --ledger-schema bucket_migrate'),
    ['ledger'],
  ).action(async (options) => {
    const config = configFrom(options);
    const url = requireDatabaseUrl(config);
    const db = createDatabase({ url, max: 1 });
    try {
      await checkConnection(db, url);
      const { applied } = await migrateLedger(db, config.ledgerSchema);
      out.result(applied.length ? `migrate: applied ${applied.join(', ')} to schema ${config.ledgerSchema}` : `migrate: schema ${config.ledgerSchema} is up to date`);
    } finally {
      await db.destroy();
    }
  });
}
