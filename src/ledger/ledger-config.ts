import { sql, type Kysely } from 'kysely';
import { formatTableName, quoteIdent } from '../config/identifiers.js';
import type { MigrateConfig } from '../config/config.js';
import { UsageError } from '../errors.js';

/** A `ledger_config` row: the locations and table a ledger was planned for. */
export interface StoredConfig {
  source_bucket: string;
  source_prefix: string;
  target_bucket: string;
  target_prefix: string;
  table_name: string;
  id_column: string;
  path_column: string;
}

function wanted(config: MigrateConfig): StoredConfig {
  return {
    source_bucket: config.source.bucket,
    source_prefix: config.source.prefix,
    target_bucket: config.target.bucket,
    target_prefix: config.target.prefix,
    table_name: formatTableName(config.table),
    id_column: config.idColumn,
    path_column: config.pathColumn,
  };
}

function describe(c: StoredConfig): string {
  return `s3://${c.source_bucket}/${c.source_prefix} -> s3://${c.target_bucket}/${c.target_prefix} for ${c.table_name}(${c.id_column}, ${c.path_column})`;
}

/**
 * Records what the ledger is planned for, or checks that it matches: a
 * ledger planned for one pair of locations must never drive a move between
 * two others, so a mismatch is refused before anything is touched.
 */
export async function bindLedgerConfig(db: Kysely<any>, config: MigrateConfig, mode: 'plan' | 'use'): Promise<void> {
  const table = sql.id(config.ledgerSchema, 'ledger_config');
  const want = wanted(config);
  if (mode === 'plan') {
    await sql`
      insert into ${table} (source_bucket, source_prefix, target_bucket, target_prefix, table_name, id_column, path_column)
      values (${want.source_bucket}, ${want.source_prefix}, ${want.target_bucket}, ${want.target_prefix},
              ${want.table_name}, ${want.id_column}, ${want.path_column})
      on conflict (singleton) do nothing
    `.execute(db);
  }
  const stored = (await sql<StoredConfig>`select * from ${table}`.execute(db)).rows[0];
  if (!stored) throw new UsageError(`the ledger in schema ${config.ledgerSchema} has not been planned: run bucket-migrate plan first`);
  const differs = (Object.keys(want) as Array<keyof StoredConfig>).filter((k) => stored[k] !== want[k]);
  if (differs.length > 0) {
    throw new UsageError(
      `the ledger in schema ${config.ledgerSchema} was planned for ${describe(stored)}, not ${describe(want)}: ` +
        `use the same settings, or plan the new move into its own ledger with --ledger-schema <name>`,
    );
  }
}

/** True when the ledger schema has been created (by `migrate` or `plan`). */
export async function ledgerExists(db: Kysely<any>, schema: string): Promise<boolean> {
  const result = await sql<{ found: boolean }>`
    select to_regclass(${`${quoteIdent(schema)}.ledger_config`}) is not null as found
  `.execute(db);
  return result.rows[0]?.found === true;
}
