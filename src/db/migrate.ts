import { Migrator, type Kysely, type MigrationProvider } from 'kysely';
import { ledgerMigrations } from '../../migrations/index.js';
import { FatalError } from '../errors.js';
import { isTransientDbError } from './database.js';

/** What `migrateLedger` did. */
export interface MigrateResult {
  applied: string[];
}

/**
 * Brings the ledger schema up to date. Safe to run concurrently: kysely
 * takes an advisory lock, and applied migrations are skipped.
 */
export async function migrateLedger(db: Kysely<any>, schema: string): Promise<MigrateResult> {
  const provider: MigrationProvider = { getMigrations: async () => ledgerMigrations(schema) };
  const migrator = new Migrator({
    db,
    provider,
    migrationTableSchema: schema,
    migrationTableName: 'kysely_migration',
    migrationLockTableName: 'kysely_migration_lock',
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    // A dropped connection is not a broken migration: let the caller retry.
    if (isTransientDbError(error)) throw error;
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'a migration';
    const message = error instanceof Error ? error.message : String(error);
    throw new FatalError(`applying ${failed} to schema ${schema} failed: ${message}`);
  }
  return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) };
}
