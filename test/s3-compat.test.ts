/**
 * What the S3 server in use really does, and the destination checks that do
 * not depend on it. Runs on every server the tests can start (MinIO by
 * default, versitygw with `TEST_S3_SERVER=versitygw`; see `npm run
 * test:versitygw`):
 *
 * - the behaviours that differ between S3 implementations are measured and
 *   compared with the README's per-server table, so the table stays what the
 *   tests measured (a new server release that changes one fails here);
 * - a foreign object at a destination is a conflict, never overwritten, with
 *   `--dest-check list` and `head`, single-part and multipart: these modes
 *   must hold on a server that ignores `If-None-Match`.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { avatarPng } from '../src/seed/png.js';
import { runCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { getBytes, putObject, setupTestEnv } from './helpers/services.js';
import { CAPABILITY_NAMES, measureCapabilities, type S3Capabilities } from './support/s3-capabilities.js';

const README = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../README.md' : '../../README.md', import.meta.url));

/** Column of the README table for each server kind the tests start. */
const README_COLUMN: Record<string, RegExp> = { minio: /^MinIO\b/, versitygw: /^versitygw\b/ };

/**
 * The README's "S3 servers" table as `{ capability: { column header: value } }`:
 * rows whose first cell names a capability in backticks, e.g.
 * `| If-None-Match on CopyObject (`copyIfNoneMatch`) | ignored | ignored |`.
 */
function readmeTable(): Map<string, Map<string, string>> {
  const lines = readFileSync(README, 'utf8').split('\n');
  const cells = (line: string) => line.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
  const table = new Map<string, Map<string, string>>();
  let header: string[] | undefined;
  for (const line of lines) {
    if (!line.trim().startsWith('|')) {
      header = undefined;
      continue;
    }
    const row = cells(line);
    if (!header) {
      header = row;
      continue;
    }
    // The last `(`name`)` in the cell: a description may hold others (`AES256`).
    const name = [...(row[0] ?? '').matchAll(/\(`(\w+)`\)/g)].at(-1)?.[1];
    if (!name || !(CAPABILITY_NAMES as readonly string[]).includes(name)) continue;
    table.set(name, new Map(header.slice(1).map((h, i) => [h, row[i + 1] ?? ''])));
  }
  return table;
}

t.test('the measured S3 behaviours are the README table\'s for this server', async (t) => {
  const env = await setupTestEnv(t);
  const measured: S3Capabilities = await measureCapabilities(env.s3client, env.sourceBucket, 'probe/');
  t.comment(`${env.s3.kind}: ${JSON.stringify(measured)}`);
  const column = README_COLUMN[env.s3.kind];
  if (!column) {
    // S3_ENDPOINT: a server the README has no column for; the measurement is the result.
    t.ok(true, `measured on ${env.s3.endpoint}: ${JSON.stringify(measured)}`);
    return;
  }
  const table = readmeTable();
  t.same([...table.keys()].sort(), [...CAPABILITY_NAMES].sort(), 'the README table has a row per measured behaviour');
  for (const name of CAPABILITY_NAMES) {
    const row = table.get(name);
    const header = [...(row?.keys() ?? [])].find((h) => column.test(h));
    t.ok(header, `the README table has a ${env.s3.kind} column`);
    // A cell may add a note after the value ("ignored: the copy replaces it").
    const documented = /^\w+/.exec(row?.get(header ?? '') ?? '')?.[0];
    t.equal(measured[name], documented, `${name} on ${env.s3.kind}: measured ${measured[name]}, README says ${documented}`);
  }
});

for (const mode of ['list', 'head'] as const) {
  t.test(`--dest-check ${mode}: a foreign destination is a conflict and kept byte for byte; an identical one counts as copied`, async (t) => {
    const env = await setupTestEnv(t);
    t.equal((await runCli(['seed', '--count', '6', '--quiet'], { env: env.env })).code, 0);
    const big = Buffer.alloc(11 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i ^ 0x5a5a5a5a, i);
    const bigForeign = Buffer.alloc(11 * 1024 * 1024, 7);
    await putObject(env.s3client, env.sourceBucket, 'image/big.png', big, { ContentType: 'image/png' });
    await query(env.databaseUrl, `insert into avatars (path) values ('image/big.png')`);
    t.equal((await runCli(['plan', '--list'], { env: env.env })).code, 0);

    const foreign = Buffer.from(`someone else's avatar-4 (${mode})`);
    await putObject(env.s3client, env.targetBucket, 'avatar/avatar-4.png', foreign);
    await putObject(env.s3client, env.targetBucket, 'avatar/avatar-3.png', avatarPng('image/avatar-3.png'), { ContentType: 'image/png' });
    await putObject(env.s3client, env.targetBucket, 'avatar/big.png', bigForeign);

    const run = await runCli(
      ['execute', '--dest-check', mode, '--threads', '1', '--multipart-threshold', '5MiB', '--part-size', '5MiB'],
      { env: env.env },
    );
    t.equal(run.code, 1, `conflicts make the exit code 1\n${run.stderr}`);
    const rows = await query<{ src_key: string; state: string; last_error: string | null }>(
      env.databaseUrl,
      'select src_key, state, last_error from bucket_migrate.migration_ledger order by src_key',
    );
    const state = (key: string) => rows.find((r) => r.src_key === key);
    t.equal(state('image/avatar-4.png')?.state, 'conflict', 'single-part: conflict');
    t.match(state('image/avatar-4.png')?.last_error, /destination exists with different content/);
    t.equal(state('image/big.png')?.state, 'conflict', 'multipart: conflict');
    t.equal(state('image/avatar-3.png')?.state, 'done', 'an identical destination counts as copied');
    t.same(await ledgerStates(env.databaseUrl), { done: 5, conflict: 2 });

    t.same(await getBytes(env.s3client, env.targetBucket, 'avatar/avatar-4.png'), foreign, 'the foreign object is intact');
    t.ok((await getBytes(env.s3client, env.targetBucket, 'avatar/big.png'))?.equals(bigForeign), 'the foreign multipart destination is intact');
    t.ok((await getBytes(env.s3client, env.sourceBucket, 'image/avatar-4.png'))?.equals(avatarPng('image/avatar-4.png')), 'the conflicted source is kept');
    t.ok((await getBytes(env.s3client, env.sourceBucket, 'image/big.png'))?.equals(big), 'the conflicted multipart source is kept');
    const paths = await query<{ path: string }>(env.databaseUrl, `select path from avatars where path like '%avatar-4.png' or path like '%big.png' order by path`);
    t.same(paths.map((p) => p.path), ['image/avatar-4.png', 'image/big.png'], 'their rows still name the sources');
  });
}
