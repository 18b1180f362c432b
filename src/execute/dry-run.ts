import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { sql, type Kysely } from 'kysely';
import type { MigrateConfig } from '../config/config.js';
import { s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import { out } from '../util/output.js';
import { factsOf, judgeCopy } from '../copy/same-object.js';

/** One action `execute` would take next. */
export interface PlannedAction {
  srcKey: string;
  dstKey: string;
  state: string;
  /** What would happen: the steps left, or why the key would be refused. */
  action: string;
}

async function head(s3: S3Client, bucket: string, key: string) {
  try {
    return await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  } catch (err) {
    if (s3ErrorCode(err) === 'NotFound' || s3HttpStatus(err) === 404) return undefined;
    throw err;
  }
}

/**
 * `execute --dry-run`: reads the next `limit` live keys in claim order and
 * says what execute would do with each, HEADing objects to predict conflicts
 * and missing sources. It claims nothing and writes nothing, to the ledger,
 * the table or either bucket.
 */
export async function dryRun(db: Kysely<any>, s3: S3Client, config: MigrateConfig, limit: number): Promise<PlannedAction[]> {
  const rows = await sql<{ src_key: string; dst_key: string; state: string; row_ids: string[]; src_size: number | null; src_etag: string | null }>`
    select src_key, dst_key, state, row_ids, src_size::float8 as src_size, src_etag from ${sql.id(config.ledgerSchema, 'migration_ledger')}
    where state in ('pending', 'copied', 'db_updated')
    order by id
    limit ${limit}
  `.execute(db);
  const actions: PlannedAction[] = [];
  for (const row of rows.rows) {
    const ids = row.row_ids.length ? `update ids ${row.row_ids.join(',')}` : 'no rows to update';
    let action: string;
    if (row.state === 'pending') {
      const [src, dst] = await Promise.all([head(s3, config.source.bucket, row.src_key), head(s3, config.target.bucket, row.dst_key)]);
      const judged = dst
        ? judgeCopy({ bucket: config.source.bucket, key: row.src_key }, src ? { fresh: factsOf(src) } : { planned: { size: row.src_size, etag: row.src_etag } }, factsOf(dst))
        : undefined;
      if (judged && !judged.same) {
        action = `refuse: conflict (a different object exists at the destination: ${judged.reason})`;
      } else if (!src && !dst) {
        action = 'refuse: missing (no source object)';
      } else {
        action = `${dst ? 'keep the identical copy' : 'copy'}, ${ids}, delete source`;
      }
    } else if (row.state === 'copied') {
      action = `${ids}, delete source`;
    } else {
      action = 'delete source';
    }
    actions.push({ srcKey: row.src_key, dstKey: row.dst_key, state: row.state, action });
  }
  return actions;
}

/** Prints dry-run actions, one line each. */
export function printDryRun(config: MigrateConfig, actions: PlannedAction[]): void {
  out.result(`dry run: the next ${actions.length} keys (nothing is claimed or changed)`);
  for (const a of actions) {
    out.result(`${a.state.padEnd(10)} s3://${config.source.bucket}/${a.srcKey} -> s3://${config.target.bucket}/${a.dstKey}: ${a.action}`);
  }
}
