import { sql, type Kysely } from 'kysely';
import type { MigrateConfig } from '../config/config.js';
import { formatTableName, quoteIdent, regclassName } from '../config/identifiers.js';

/**
 * A missing privilege is a configuration error (exit 2), and the line that
 * reports it names the grant, from docs/PRIVILEGES.md.
 */

/** True for an S3 refusal the run cannot go past: permissions, not this object. */
export function isS3AccessDenied(fatal: string): boolean {
  return /AccessDenied|AllAccessDisabled|\(HTTP 403\)/.test(fatal);
}

/** The IAM actions the failed step needs, named after the step that was refused. */
export function s3GrantFor(fatal: string, config: MigrateConfig): string {
  const src = `arn:aws:s3:::${config.source.bucket}/${config.source.prefix}*`;
  const dst = `arn:aws:s3:::${config.target.bucket}/${config.target.prefix}*`;
  if (fatal.startsWith('delete:')) return `s3:DeleteObject on ${src}`;
  if (fatal.startsWith('verify target:')) return `s3:GetObject on ${dst}`;
  if (fatal.startsWith('copy back:') || fatal.startsWith('revert')) return `s3:GetObject on ${dst}, s3:PutObject on ${src}, s3:DeleteObject on ${dst}`;
  return `s3:GetObject and s3:GetObjectTagging on ${src}, s3:PutObject and s3:PutObjectTagging on ${dst}, s3:ListBucket on both buckets (prefix-conditioned)`;
}

/** One line for an S3 refusal: what was refused and the grant that fixes it. */
export function explainS3Denied(fatal: string, config: MigrateConfig): string {
  return `S3 refused a request (${fatal}): grant ${s3GrantFor(fatal, config)} (docs/PRIVILEGES.md), then run the same command again to resume`;
}

/**
 * The documented Postgres grants the connected role lacks, as GRANT
 * statements, read from has_*_privilege (so it names the one missing, not
 * the whole list). Empty when it cannot tell.
 */
export async function missingDbGrants(db: Kysely<any>, config: MigrateConfig): Promise<string[]> {
  const table = regclassName(config.table);
  const schema = config.ledgerSchema;
  const ledger = (name: string) => `${quoteIdent(schema)}.${name}`;
  const row = (
    await sql<{ role: string; sel: boolean; upd: boolean; usage: boolean | null; ledger_rw: boolean | null; runs_rw: boolean | null }>`
      select current_user as role,
             has_table_privilege(${table}, 'SELECT') as sel,
             has_column_privilege(${table}, ${config.pathColumn}, 'UPDATE') as upd,
             case when exists (select 1 from pg_namespace where nspname = ${schema}) then has_schema_privilege(${schema}, 'USAGE') end as usage,
             case when to_regclass(${ledger('migration_ledger')}) is not null
                  then has_table_privilege(${ledger('migration_ledger')}, 'SELECT, INSERT, UPDATE, DELETE') end as ledger_rw,
             case when to_regclass(${ledger('runs')}) is not null
                  then has_table_privilege(${ledger('runs')}, 'SELECT, INSERT, UPDATE') end as runs_rw
    `.execute(db)
  ).rows[0];
  if (!row) return [];
  // Plain names stay unquoted, as in docs/PRIVILEGES.md; anything else is quoted.
  const ident = (n: string) => (/^[a-z_][a-z0-9_]*$/.test(n) ? n : quoteIdent(n));
  const role = ident(row.role);
  const name = formatTableName(config.table);
  const missing: string[] = [];
  if (!row.sel) missing.push(`GRANT SELECT ON TABLE ${name} TO ${role}`);
  if (!row.upd) missing.push(`GRANT UPDATE (${ident(config.pathColumn)}) ON TABLE ${name} TO ${role}`);
  if (row.usage === false) missing.push(`ALTER SCHEMA ${ident(schema)} OWNER TO ${role}`);
  else if (row.ledger_rw === false || row.runs_rw === false) missing.push(`ALTER SCHEMA ${ident(schema)} OWNER TO ${role} (the ledger's tables must be the role's own)`);
  return missing;
}

/** One line for a Postgres permission error, naming the missing grant when it can be read. */
export async function explainDbDenied(db: Kysely<any>, config: MigrateConfig, message: string): Promise<string> {
  const missing = await missingDbGrants(db, config).catch(() => []);
  const grant = missing.length > 0 ? `run ${missing.join('; ')}` : 'grant the privileges in docs/PRIVILEGES.md';
  return `the database refused: ${message}; ${grant} (docs/PRIVILEGES.md), then run the same command again to resume`;
}
