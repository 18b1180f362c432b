import { sql } from 'kysely';
import type { LedgerContext } from '../ledger/state-machine.js';

/**
 * Rows of the table whose path the plan leaves alone because it is under
 * neither prefix, by kind. They are reported, never touched: a path with a
 * leading `/` or in another case may well mean a legacy key, but guessing
 * which object a row meant is not this tool's call.
 */
export interface OutsideRows {
  null: number;
  empty: number;
  leadingSlash: number;
  other: number;
}

export async function countOutside(
  ctx: Pick<LedgerContext, 'db' | 'table' | 'pathColumn'>,
  sourcePrefix: string,
  targetPrefix: string,
): Promise<OutsideRows> {
  const table = ctx.table.schema ? sql.id(ctx.table.schema, ctx.table.name) : sql.id(ctx.table.name);
  const path = sql.id(ctx.pathColumn);
  const result = await sql<OutsideRows>`
    select count(*) filter (where ${path} is null)::int as "null",
           count(*) filter (where ${path} = '')::int as empty,
           count(*) filter (where starts_with(${path}, '/'))::int as "leadingSlash",
           count(*) filter (where ${path} <> '' and not starts_with(${path}, '/')
                              and not starts_with(${path}, ${sourcePrefix})
                              and not starts_with(${path}, ${targetPrefix}))::int as other
    from ${table}
  `.execute(ctx.db);
  return result.rows[0]!;
}

/** The total of {@link OutsideRows}. */
export function outsideTotal(o: OutsideRows): number {
  return o.null + o.empty + o.leadingSlash + o.other;
}
