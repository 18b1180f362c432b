import { UsageError } from '../errors.js';

/** A plain SQL identifier: what we accept for tables, columns and schemas. */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** A table name, optionally schema-qualified, split into its parts. */
export interface TableName {
  schema?: string;
  name: string;
}

/**
 * Checks that `value` is a plain SQL identifier. Names are still quoted when
 * used, so this is belt and braces: a name that needs quoting is almost
 * certainly a typo or an injection attempt, and deserves a clear refusal.
 */
export function parseIdentifier(value: string, setting: string): string {
  if (!IDENTIFIER.test(value)) {
    throw new UsageError(
      `${setting} must be a plain SQL identifier (letters, digits, underscore; at most 63), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Parses `table` or `schema.table`. */
export function parseTableName(value: string, setting: string): TableName {
  const parts = value.split('.');
  if (parts.length === 2) {
    return { schema: parseIdentifier(parts[0]!, setting), name: parseIdentifier(parts[1]!, setting) };
  }
  if (parts.length === 1) return { name: parseIdentifier(value, setting) };
  throw new UsageError(`${setting} must be "table" or "schema.table", got ${JSON.stringify(value)}`);
}

/** The table as text, for messages. */
export function formatTableName(table: TableName): string {
  return table.schema ? `${table.schema}.${table.name}` : table.name;
}

/**
 * A name quoted as an SQL identifier, for the text of a `regclass` passed as
 * a bound parameter (`to_regclass($1)`, `$1::regclass`): never pasted into SQL.
 */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The table's quoted, optionally schema-qualified name, for a `regclass` parameter. */
export function regclassName(table: TableName): string {
  return table.schema ? `${quoteIdent(table.schema)}.${quoteIdent(table.name)}` : quoteIdent(table.name);
}
