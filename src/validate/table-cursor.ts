import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';

/**
 * Streams the rows of `query` through a server-side cursor, `pageSize` rows
 * per FETCH, with the next FETCH in flight while a page is consumed. The
 * query runs once (Postgres sorts on its side, spilling to disk if it must),
 * and this process holds at most two pages: constant memory at any row
 * count, without the pg-cursor package.
 *
 * The cursor lives in a REPEATABLE READ, READ ONLY transaction, so every row
 * comes from one snapshot. That transaction is held for the whole stream,
 * which holds back vacuum for its length: run the full validation after a
 * migration, and use `--sample` while one is running.
 */
export async function withCursor<R, T>(
  db: Kysely<any>,
  query: RawBuilder<R>,
  pageSize: number,
  consume: (rows: AsyncGenerator<R>) => Promise<T>,
): Promise<T> {
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx: Transaction<any>) => {
      const name = sql.id('bucket_migrate_validate');
      await sql`declare ${name} no scroll cursor for ${query}`.execute(trx);
      const fetchPage = () => sql<R>`fetch forward ${sql.raw(String(pageSize))} from ${name}`.execute(trx);
      async function* rows(): AsyncGenerator<R> {
        let next: ReturnType<typeof fetchPage> | undefined = fetchPage();
        while (next) {
          const page: Awaited<ReturnType<typeof fetchPage>> = await next;
          next = page.rows.length === pageSize ? fetchPage() : undefined;
          next?.catch(() => undefined);
          yield* page.rows;
        }
      }
      const result = await consume(rows());
      await sql`close ${name}`.execute(trx);
      return result;
    });
}
