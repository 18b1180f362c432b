import { sql, type RawBuilder } from 'kysely';

/** The path column's length limit (`varchar(n)`, `char(n)`), when it has one. */
export interface PathLimit {
  /** Characters. */
  length: number;
  /** The column's type as Postgres names it, for the reason: `character varying(40)`. */
  type: string;
}

/** What the refusal of a key needs to know besides the key. */
export interface RefusalRules {
  sourcePrefix: string;
  targetPrefix: string;
  pathLimit?: PathLimit;
  /** How a value enters the SQL: a bind parameter, or a literal for COPY. */
  value?: (v: string | number) => RawBuilder<unknown>;
}

const bind = (v: string | number) => sql`${v}`;

/**
 * The destination key of a source key (an SQL text expression): the target
 * prefix and the key without its source prefix. Lengths are counted in
 * characters by Postgres on both sides (`char_length`, `substr`): a count
 * made in JavaScript would be in UTF-16 units, and a prefix with a
 * character outside the Basic Multilingual Plane (`img😀/`) would cut the
 * key one character too far.
 */
export function destinationKey(srcKey: RawBuilder<unknown>, rules: RefusalRules): RawBuilder<unknown> {
  const value = rules.value ?? bind;
  return sql`${value(rules.targetPrefix)} || substr(${srcKey}, char_length(${value(rules.sourcePrefix)}::text) + 1)`;
}

/**
 * Why a key cannot be moved (an SQL text expression, NULL when it can): its
 * destination is longer than S3's 1,024 bytes or than the path column
 * allows (the commit would fail), or it holds control characters (S3's XML
 * listings cannot carry them faithfully). Planned keys and orphans found by
 * `plan --list` pass the same rules.
 */
export function keyRefusal(srcKey: RawBuilder<unknown>, rules: RefusalRules): RawBuilder<unknown> {
  const value = rules.value ?? bind;
  const growthBytes = Buffer.byteLength(rules.targetPrefix) - Buffer.byteLength(rules.sourcePrefix);
  const limit = rules.pathLimit;
  const tooLongForColumn = limit
    ? sql`when char_length(${srcKey}) - char_length(${value(rules.sourcePrefix)}::text) + char_length(${value(rules.targetPrefix)}::text) > ${value(limit.length)}::int
            then ${value(`destination path is longer than the path column allows (${limit.type}): the commit would fail`)}::text`
    : sql``;
  return sql`case when octet_length(${srcKey}) + ${value(growthBytes)}::int > 1024 then 'destination key is longer than 1024 bytes'
                  ${tooLongForColumn}
                  when ${srcKey} collate "C" ~ '[\\x01-\\x1f\\x7f]' then 'key contains control characters, which S3 listings cannot carry'
             end`;
}
