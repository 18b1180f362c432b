/**
 * Proves the end state of a migration directly (rows, objects, bytes), and
 * with the CLI's `validate`.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { queryOnce } from '../../scripts/lib/pg-once.js';
import type { Test } from 'tap';
import { runCli } from '../helpers/cli.js';
import type { TestEnv } from '../helpers/services.js';

/** What a migration starts from: rows and the source objects' size and ETag. */
export interface Baseline {
  rows: Map<string, string | null>;
  objects: Map<string, { size: number; etag: string }>;
}

export interface ObjectInfo {
  size: number;
  etag: string;
}

/** Every object under a prefix with its size and ETag. */
export async function listObjects(s3: S3Client, bucket: string, prefix: string): Promise<Map<string, ObjectInfo>> {
  const objects = new Map<string, ObjectInfo>();
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) objects.set(o.Key, { size: o.Size ?? -1, etag: o.ETag ?? '' });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return objects;
}

/** Runs one query on a fresh connection. */
export const query = queryOnce;

export async function captureBaseline(env: TestEnv, sourcePrefix = 'image/'): Promise<Baseline> {
  const rows = await query<{ id: string; path: string | null }>(env.databaseUrl, 'select id::text as id, path from avatars');
  return {
    rows: new Map(rows.map((r) => [r.id, r.path])),
    objects: await listObjects(env.s3client, env.sourceBucket, sourcePrefix),
  };
}

/** Ledger rows per state. */
export async function ledgerStates(url: string, schema = 'bucket_migrate'): Promise<Record<string, number>> {
  const rows = await query<{ state: string; n: number }>(
    url,
    `select state, count(*)::int as n from "${schema}".migration_ledger group by state order by state`,
  );
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

type Asserter = Test;

export interface EndStateOptions {
  sourcePrefix?: string;
  targetPrefix?: string;
  /** Run `bucket-migrate validate` too (default true). */
  validate?: boolean;
  /** Extra env for validate (e.g. a proxy-free S3_ENDPOINT). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Every row that pointed under the source prefix now points at the same
 * relative key under the target prefix, whose object has the source's size
 * and ETag (a single-part copy keeps the MD5); the source prefix is empty;
 * no other row changed; the ledger has nothing live and nothing failed.
 */
export async function assertMigrated(t: Asserter, env: TestEnv, baseline: Baseline, opts: EndStateOptions = {}): Promise<void> {
  const sourcePrefix = opts.sourcePrefix ?? 'image/';
  const targetPrefix = opts.targetPrefix ?? 'avatar/';
  const rows = await query<{ id: string; path: string | null }>(env.databaseUrl, 'select id::text as id, path from avatars');
  const target = await listObjects(env.s3client, env.targetBucket, targetPrefix);
  const source = await listObjects(env.s3client, env.sourceBucket, sourcePrefix);
  const problems: string[] = [];
  for (const row of rows) {
    const before = baseline.rows.get(row.id);
    if (before == null || !before.startsWith(sourcePrefix)) {
      if (row.path !== before) problems.push(`row ${row.id} outside the source prefix changed: ${before} -> ${row.path}`);
      continue;
    }
    const want = targetPrefix + before.slice(sourcePrefix.length);
    if (row.path !== want) {
      problems.push(`row ${row.id}: ${row.path}, expected ${want}`);
      continue;
    }
    const copy = target.get(want);
    const original = baseline.objects.get(before);
    if (!copy) problems.push(`row ${row.id}: target object ${want} is missing`);
    else if (original && (copy.size !== original.size || copy.etag !== original.etag)) {
      problems.push(`row ${row.id}: ${want} differs from the original (${copy.size}/${copy.etag} vs ${original.size}/${original.etag})`);
    }
  }
  t.same(problems.slice(0, 10), [], `every moved row points at an identical copy (${problems.length} problems)`);
  t.equal(source.size, 0, `the source prefix is empty (left: ${[...source.keys()].slice(0, 5).join(', ')})`);
  const states = await ledgerStates(env.databaseUrl);
  t.same(
    Object.keys(states).filter((s) => s !== 'done'),
    [],
    `every ledger row is done: ${JSON.stringify(states)}`,
  );
  if (opts.validate !== false) await assertValidate(t, { ...env.env, ...opts.env });
}

/** Runs `bucket-migrate validate`, which must pass. */
export async function assertValidate(t: Asserter, env: NodeJS.ProcessEnv): Promise<void> {
  const result = await runCli(['validate'], { env, timeoutMs: 120_000 });
  t.equal(result.code, 0, `validate passes\n${result.stdout}\n${result.stderr}`);
}
