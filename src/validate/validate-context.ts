import type { S3Client } from '@aws-sdk/client-s3';
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { MigrateConfig } from '../config/config.js';

/** What every check needs. */
export interface ValidateContext {
  db: Kysely<any>;
  s3: S3Client;
  config: MigrateConfig;
  /** Known exceptions fail too. */
  strict: boolean;
}

/** The application's table, quoted. */
export function appTable(config: MigrateConfig): RawBuilder<unknown> {
  return config.table.schema ? sql.id(config.table.schema, config.table.name) : sql.id(config.table.name);
}

/** The ledger table, quoted. */
export function ledgerTable(config: MigrateConfig): RawBuilder<unknown> {
  return sql.id(config.ledgerSchema, 'migration_ledger');
}
