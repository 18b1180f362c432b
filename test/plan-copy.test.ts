/**
 * The first plan's bulk load streams the judged keys with COPY from a second
 * connection into the empty ledger. These tests hold it to the upsert's exact
 * semantics (every byte of every key, ids in key order, the identity
 * advanced) and check that a failure on either connection mid-COPY leaves
 * the ledger empty and reports one line.
 */
import t, { type Test } from 'tap';
import { runCli, spawnCli } from './helpers/cli.js';
import { query } from './helpers/db.js';
import { setupTestEnv, type TestEnv } from './helpers/services.js';

const LEDGER = 'bucket_migrate.migration_ledger';

async function withTable(t: Test, paths: Array<string | null>, generated = 0): Promise<TestEnv> {
  // plan checks that both buckets exist before it touches anything.
  const env = await setupTestEnv(t);
  await query(env.databaseUrl, 'create table avatars (id serial primary key, path varchar)');
  if (paths.length > 0) await query(env.databaseUrl, 'insert into avatars (path) select unnest($1::varchar[])', [paths]);
  if (generated > 0) {
    await query(
      env.databaseUrl,
      `insert into avatars (path) select 'image/generated-' || lpad(g::text, 8, '0') || '.png' from generate_series(1, $1::int) g`,
      [generated],
    );
  }
  return env;
}

/** What the ledger must hold, computed independently in SQL from the table. */
const EXPECTED = `
  select path::text collate "C" as src_key, 'avatar/' || substr(path::text, 7) as dst_key,
         array_agg(id::text order by id) as row_ids
  from avatars where starts_with(path, 'image/') group by 1, 2`;

/** Indexes and constraints of the ledger, to check a failed load restored them. */
async function ledgerShape(url: string): Promise<string[]> {
  const rows = await query<{ d: string }>(
    url,
    `select pg_get_indexdef(indexrelid) as d from pg_index where indrelid = '${LEDGER}'::regclass
     union all select conname || ' ' || pg_get_constraintdef(oid) from pg_constraint where conrelid = '${LEDGER}'::regclass
     order by 1`,
  );
  return rows.map((r) => r.d);
}

t.test('keys COPY could mangle round-trip exactly, in byte order, with the identity advanced', async (t) => {
  const hostile = [
    'image/tab\there.png',
    'image/new\nline.png',
    'image/carriage\rreturn.png',
    'image/back\\slash.png',
    'image/\\N',
    'image/\\.',
    'image/\\',
    'image/ends-with-backslash\\',
    "image/single'quote.png",
    'image/double"quote.png',
    'image/{brace,comma}.png',
    'image/"{\\"}"',
    'image/NULL',
    'image/ünïcödé-头像.png',
    'image/emoji-😀.png',
    'image/Zebra.png',
    'image/apple.png',
    'image/',
    'image/ space .png',
    'image/del\x7f.png',
  ];
  // Duplicates aggregate into row_ids; rows outside the prefix stay out.
  const env = await withTable(t, [...hostile, 'image/back\\slash.png', 'image/tab\there.png', null, 'other/x.png', 'image/apple.png']);
  const plan = await runCli(['plan', '--json'], { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  const result = JSON.parse(plan.stdout) as { snapshot: { added: number; refused: number }; total: number; states: Record<string, number> };
  t.equal(result.snapshot.added, hostile.length, 'one ledger row per distinct key');
  // tab, newline, carriage return, DEL.
  t.equal(result.snapshot.refused, 4, 'control-character keys refused');
  t.same(result.states, { pending: hostile.length - 4, failed: 4 }, 'state counts known from the load match');
  t.same(
    Object.fromEntries((await query<{ state: string; n: number }>(env.databaseUrl, `select state, count(*)::int as n from ${LEDGER} group by state`)).map((r) => [r.state, r.n])),
    result.states,
    'and the ledger itself',
  );

  const diff = await query(
    env.databaseUrl,
    `with expected as (${EXPECTED})
     select e.src_key as expected, l.src_key as got
     from expected e full join ${LEDGER} l
       on convert_to(l.src_key, 'UTF8') = convert_to(e.src_key, 'UTF8') and convert_to(l.dst_key, 'UTF8') = convert_to(e.dst_key, 'UTF8')
       and l.row_ids = e.row_ids
     where e.src_key is null or l.src_key is null`,
  );
  t.same(diff, [], 'src_key, dst_key and row_ids byte-identical to the table');
  const refused = await query<{ src_key: string; state: string; last_error: string; failed_state: string; planned_run_id: number }>(
    env.databaseUrl,
    `select src_key, state, last_error, failed_state, planned_run_id from ${LEDGER} where state = 'failed' order by src_key collate "C"`,
  );
  t.same(
    refused.map((r) => [r.src_key, r.last_error, r.failed_state]),
    ['image/carriage\rreturn.png', 'image/del\x7f.png', 'image/new\nline.png', 'image/tab\there.png']
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
      .map((k) => [k, 'key contains control characters, which S3 listings cannot carry', 'pending']),
    'refused keys carry the reason and the state to retry from',
  );
  const pending = await query<{ n: number }>(
    env.databaseUrl,
    `select count(*)::int as n from ${LEDGER} where state = 'pending' and last_error is null and failed_state is null and planned_run_id is not null`,
  );
  t.equal(pending[0]!.n, hostile.length - 4, 'pending keys have no error');

  const order = await query<{ src_key: string; id: number }>(env.databaseUrl, `select src_key, id::int as id from ${LEDGER} order by id`);
  const keys = order.map((r) => r.src_key);
  t.same(keys, [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))), 'ids follow the byte order of the keys');
  t.same(order.map((r) => r.id), order.map((_, i) => order[0]!.id + i), 'ids are consecutive');

  const seq = await query<{ last: number; max: number }>(
    env.databaseUrl,
    `select pg_sequence_last_value(pg_get_serial_sequence('${LEDGER}', 'id')::regclass) ::int as last, (select max(id)::int from ${LEDGER}) as max`,
  );
  t.equal(seq[0]!.last, seq[0]!.max, 'the identity sequence was advanced past the loaded ids');
  // A new key takes the next id through the upsert path.
  await query(env.databaseUrl, `insert into avatars (path) values ('image/zzz-later.png')`);
  const again = await runCli(['plan', '--json'], { env: env.env });
  t.equal(again.code, 0, again.stderr);
  t.match(JSON.parse(again.stdout), { snapshot: { added: 1, extended: 0 } });
  const later = await query<{ id: number }>(env.databaseUrl, `select id::int as id from ${LEDGER} where src_key = 'image/zzz-later.png'`);
  t.equal(later[0]!.id, seq[0]!.max + 1, 'the next key takes the next id');
  t.same(await frozen(env.databaseUrl), { frozen: true }, 'the bulk load wrote frozen rows (COPY FREEZE)');
});

/** Whether every ledger page is all-visible (COPY FREEZE sets the visibility map). */
async function frozen(url: string): Promise<{ frozen: boolean }> {
  // The load's ANALYZE counts all-visible pages from the visibility map: all
  // of them after COPY FREEZE, none after a plain COPY or INSERT.
  const rows = await query<{ frozen: boolean }>(
    url,
    `select relallvisible = relpages and relpages > 0 as frozen from pg_class where oid = '${LEDGER}'::regclass`,
  );
  return rows[0]!;
}

t.test('a failure mid-COPY leaves the ledger empty, says so in one line, and the next plan loads it', async (t) => {
  const env = await withTable(t, ['image/a.png'], 400_000);
  // Creates the ledger (empty) so its shape can be compared afterwards.
  await runCli(['migrate'], { env: env.env });
  const shape = await ledgerShape(env.databaseUrl).catch(() => undefined);

  for (const side of ['read', 'load'] as const) {
    const run = spawnCli(['plan'], { env: env.env, timeoutMs: 120_000 });
    // Wait until rows are flowing into the ledger, then end one side's backend.
    let killed = false;
    for (let i = 0; i < 600 && !killed; i++) {
      const rows = await query<{ killed: boolean }>(
        env.databaseUrl,
        `select pg_terminate_backend(a.pid) as killed
         from pg_stat_activity a
         where a.application_name = 'bucket-migrate plan (${side})'
           and exists (select 1 from pg_stat_progress_copy p where p.command = 'COPY FROM' and p.tuples_processed > 0)`,
      );
      killed = rows.some((r) => r.killed);
      if (!killed) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    t.ok(killed, `the ${side} connection was terminated while rows streamed`);
    const result = await run.result;
    t.not(result.code, 0, `${side}: plan fails`);
    const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
    t.equal(lines.length, 1, `${side}: one line\n${result.stderr}`);
    t.match(result.stderr, /loading the ledger failed, the ledger is left empty/, `${side}: says what happened`);
    t.notMatch(result.stderr, /\n\s+at /, `${side}: no stack trace`);
    const count = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from ${LEDGER}`);
    t.equal(count[0]!.n, 0, `${side}: the ledger is empty`);
    if (shape) t.same(await ledgerShape(env.databaseUrl), shape, `${side}: indexes and constraints as before`);
  }

  const plan = await runCli(['plan', '--json'], { env: env.env, timeoutMs: 120_000 });
  t.equal(plan.code, 0, plan.stderr);
  t.match(JSON.parse(plan.stdout), { snapshot: { added: 400_001, refused: 0 }, total: 400_001, states: { pending: 400_001 } }, 'the next plan loads everything');
  const count = await query<{ n: number; keys: number }>(env.databaseUrl, `select count(*)::int as n, count(distinct src_key)::int as keys from ${LEDGER}`);
  t.same(count[0], { n: 400_001, keys: 400_001 });
});
