import { sql, type RawBuilder } from 'kysely';
import type { LocationConfig } from '../config/config.js';

/** A regular expression matching `text` literally. */
const literally = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The key under `location`'s prefix that a path names, in any spelling a
 * row may use for it, or NULL when it names nothing there:
 *
 * - the key itself (`image/a.png`), the spelling plan moves;
 * - with a leading slash (`/image/a.png`);
 * - an S3 URI (`s3://legacy-s3/image/a.png`);
 * - an https (or http) URL, path-style (`https://host/legacy-s3/image/a.png`)
 *   or virtual-hosted (`https://legacy-s3.s3.amazonaws.com/image/a.png`).
 *   URL keys are taken as written, not percent-decoded.
 *
 * The bucket and prefix are parameters (escaped for the regular expression),
 * never pasted into the SQL.
 */
export function namedKey(location: LocationConfig, path: RawBuilder<unknown>): RawBuilder<string | null> {
  const { bucket, prefix } = location;
  const p = sql`${path}::text`;
  const uri = `s3://${bucket}/`;
  const pathStyle = `^https?://[^/]+/${literally(bucket)}/(${literally(prefix)}.*)$`;
  const virtualHosted = `^https?://${literally(bucket)}\\.[^/]+/(${literally(prefix)}.*)$`;
  return sql<string | null>`(case
    when starts_with(${p}, ${prefix}::text) then ${p}
    when starts_with(${p}, ${`/${prefix}`}::text) then substr(${p}, 2)
    when starts_with(${p}, ${uri + prefix}::text) then substr(${p}, ${uri.length + 1})
    when starts_with(${p}, 'http') then coalesce(substring(${p} from ${pathStyle}::text), substring(${p} from ${virtualHosted}::text))
  end)`;
}

/** `s3://bucket/key`: how findings name an object. */
export function objectUrl(location: LocationConfig, key: string): string {
  return `s3://${location.bucket}/${key}`;
}

/** The finding's sentence for a row naming an object that does not exist. */
export function brokenReason(rowId: string, object: string, path: string, key: string): string {
  return `row ${rowId} names ${object}, which does not exist${path !== key ? ` (spelled ${JSON.stringify(path)})` : ''}`;
}
