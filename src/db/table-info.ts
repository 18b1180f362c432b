import { sql, type Kysely } from 'kysely';
import { formatTableName, regclassName, type TableName } from '../config/identifiers.js';
import { UsageError } from '../errors.js';
import type { PathLimit } from '../plan/key-refusal.js';

/** What the tool needs to know about the application's table. */
export interface TableInfo {
  /** The id column's type as a cast target, from a fixed list. */
  idCast: string;
  /**
   * Whether an index can find rows by path (a valid, non-partial btree or
   * hash index leading with the path column, in its collation): what makes
   * the check for rows added since the plan cheap (see `requeueReferenced`).
   */
  hasPathIndex: boolean;
  /** Whether the id column is the table's primary key (or unique). */
  idIsUnique: boolean;
  /** The path column's length limit (`varchar(n)`, `char(n)`); undefined for text or an unbounded varchar. */
  pathLimit?: PathLimit;
}

// Casts we are willing to paste into SQL: the id column's type is looked up
// in the catalog and must map to one of these.
const ID_CASTS: Record<string, string> = {
  smallint: 'int2',
  integer: 'int4',
  bigint: 'int8',
  uuid: 'uuid',
  text: 'text',
  'character varying': 'varchar',
};

const PATH_TYPES = new Set(['text', 'character varying', 'character']);

/**
 * Looks the table and its columns up in the catalog, so that a typo in
 * `--table` or a column flag is one clear line instead of an SQL error
 * halfway through a run.
 */
export async function inspectTable(
  db: Kysely<any>,
  table: TableName,
  idColumn: string,
  pathColumn: string,
): Promise<TableInfo> {
  const name = formatTableName(table);
  const regclass = regclassName(table);
  const found = await sql<{ oid: number | null }>`select to_regclass(${regclass})::oid as oid`.execute(db);
  const oid = found.rows[0]?.oid;
  if (!oid) throw new UsageError(`table ${name} does not exist: check --table (or MIGRATE_TABLE) and the database in DATABASE_URL`);

  const columns = await sql<{ attname: string; type: string; full_type: string; typmod: number }>`
    select a.attname, regexp_replace(format_type(a.atttypid, null), '\\(.*\\)', '') as type,
           format_type(a.atttypid, a.atttypmod) as full_type, a.atttypmod as typmod
    from pg_attribute a
    where a.attrelid = ${oid} and a.attnum > 0 and not a.attisdropped and a.attname in (${idColumn}, ${pathColumn})
  `.execute(db);
  const typeOf = (col: string) => columns.rows.find((r) => r.attname === col)?.type;
  const idType = typeOf(idColumn);
  const pathType = typeOf(pathColumn);
  if (!idType) throw new UsageError(`column ${idColumn} does not exist in ${name}: check --id-column`);
  if (!pathType) throw new UsageError(`column ${pathColumn} does not exist in ${name}: check --path-column`);
  const idCast = ID_CASTS[idType];
  if (!idCast) throw new UsageError(`--id-column ${idColumn} has type ${idType}; supported: ${Object.keys(ID_CASTS).join(', ')}`);
  if (!PATH_TYPES.has(pathType)) throw new UsageError(`--path-column ${pathColumn} has type ${pathType}; it must be text, varchar or char`);

  const indexes = await sql<{ leading: string; is_unique: boolean; cols: number; by_equality: boolean }>`
    select a.attname as leading, i.indisunique as is_unique, i.indnatts as cols,
           i.indisvalid and am.amname in ('btree', 'hash') and i.indexprs is null
             and coalesce(i.indcollation[0], 0) = a.attcollation as by_equality
    from pg_index i
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
    join pg_class c on c.oid = i.indexrelid
    join pg_am am on am.oid = c.relam
    where i.indrelid = ${oid} and i.indpred is null
  `.execute(db);
  const idIsUnique = indexes.rows.some((r) => r.leading === idColumn && r.is_unique && r.cols === 1);
  if (!idIsUnique) {
    throw new UsageError(`--id-column ${idColumn} of ${name} has no primary key or unique index: rows could not be updated by id`);
  }
  // varchar(n) and char(n) keep n + 4 (the varlena header) in atttypmod; -1: no limit.
  const pathColumnRow = columns.rows.find((r) => r.attname === pathColumn)!;
  const pathLimit = pathType !== 'text' && pathColumnRow.typmod > 4 ? { length: pathColumnRow.typmod - 4, type: pathColumnRow.full_type } : undefined;
  return { pathLimit, idCast, hasPathIndex: indexes.rows.some((r) => r.leading === pathColumn && r.by_equality), idIsUnique };
}
