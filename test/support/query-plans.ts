/**
 * What the EXPLAIN tests share: the ledger's statements captured as the
 * state machine sends them, and the nodes of a JSON query plan.
 */
import { Kysely, PostgresDialect, type CompiledQuery } from 'kysely';
import pg from 'pg';
import type { Test } from 'tap';

/** One node of `explain (format json)`, with the fields the tests read. */
export interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  'Shared Hit Blocks'?: number;
  'Shared Read Blocks'?: number;
  Plans?: PlanNode[];
}

/** Every node of a plan, the root first. */
export const nodesOf = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(nodesOf)];

/** "Index Scan on migration_ledger using migration_ledger_pkey". */
export const describeNode = (n: PlanNode) => `${n['Node Type']}${n['Relation Name'] ? ` on ${n['Relation Name']}` : ''}${n['Index Name'] ? ` using ${n['Index Name']}` : ''}`;

/**
 * A kysely connection to `url` (two connections, closed at teardown) that
 * records every statement it sends in `captured`, so a test can EXPLAIN
 * exactly what the state machine ran.
 */
export function capturingDb(t: Pick<Test, 'teardown'>, url: string): { db: Kysely<any>; captured: CompiledQuery[] } {
  const captured: CompiledQuery[] = [];
  const db = new Kysely<any>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }),
    log: (event) => {
      if (event.level === 'query') captured.push(event.query);
    },
  });
  t.teardown(() => db.destroy());
  return { db, captured };
}
