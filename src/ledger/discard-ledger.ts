import { sql, type Kysely } from 'kysely';

/** What existed before a command first created the ledger, so a failure can undo exactly that. */
export interface LedgerBefore {
  /** The ledger tables were there already: nothing to undo, the run row is closed instead. */
  ledger: boolean;
  /** The schema itself was there (pre-created for a least-privilege role, docs/PRIVILEGES.md). */
  schema: boolean;
}

/** Whether the ledger schema and its tables exist yet. */
export async function ledgerBefore(db: Kysely<any>, schema: string): Promise<LedgerBefore> {
  const result = await sql<{ schema: boolean; ledger: boolean }>`
    select exists (select 1 from pg_namespace where nspname = ${schema}) as schema,
           exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = ${schema} and c.relname = 'ledger_config') as ledger
  `.execute(db);
  const row = result.rows[0];
  return { schema: row?.schema === true, ledger: row?.ledger === true };
}

// Every table the migrations create; the audit views depend on them and go with `cascade`.
const LEDGER_TABLES = ['migration_ledger', 'runs', 'ledger_config', 'kysely_migration', 'kysely_migration_lock'];

/**
 * Undoes a ledger that a failed `plan` created moments ago, so that the
 * corrected command starts clean instead of being refused as "planned for"
 * the mistyped settings. A schema the tool created is dropped whole; a
 * schema that was pre-created for it keeps existing, only the tool's tables
 * (and the views on them) go. Never called when the ledger existed before.
 */
export async function discardNewLedger(db: Kysely<any>, schema: string, before: LedgerBefore): Promise<void> {
  if (before.ledger) return;
  if (!before.schema) {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    return;
  }
  await sql`drop table if exists ${sql.join(LEDGER_TABLES.map((name) => sql.id(schema, name)))} cascade`.execute(db);
}
