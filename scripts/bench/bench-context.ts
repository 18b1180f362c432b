/**
 * What every phase of the bench shares: the services, the database, the
 * buckets the objects shuttle between, the CPU meters, the time budget and
 * the Ctrl-C flag. setup-phase.ts makes one; the phases only read it, save
 * for the shuttle's direction and the budget's list of skipped runs.
 */
import { DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { queryOnce } from '../lib/pg-once.js';
import type { LocalS3 } from '../lib/local-minio.js';
import type { LocalPostgres } from '../lib/local-postgres.js';
import type { ChildRunner } from './children.js';
import type { BackendCpuSampler } from './proc.js';
import type { BenchOptions } from './options.js';

/** A bucket and a key prefix. */
export interface Location {
  bucket: string;
  prefix: string;
}

/** The shared state of one bench run. */
export interface BenchContext {
  options: BenchOptions;
  log: (line: string) => void;
  children: ChildRunner;
  postgres: LocalPostgres;
  s3: LocalS3;
  /** An S3 client of the bench's own (counting, emptying, the listing figure). */
  client: S3Client;
  dbName: string;
  dbUrl: string;
  /** The four buckets: A and B hold the seeded objects; C and D the RSS and listing runs. */
  buckets: string[];
  /** The environment every CLI child starts from (services, credentials, table). */
  base: NodeJS.ProcessEnv;
  startedAt: Date;
  loadAtStart: number[];
  seed: { objects: number; seconds: number };
  cpu: CpuMeters;
  shuttle: Shuttle;
  budget: Budget;
  /** True once Ctrl-C arrived: phases stop starting runs. */
  interrupted(): boolean;
  /** A fresh ledger schema name for the next plan + execute run. */
  nextLedgerSchema(): string;
}

/** MinIO's CPU time (less its idle rate) and the Postgres backends'. */
export interface CpuMeters {
  /** MinIO's CPU seconds so far; undefined when it is not a local process. */
  minio(): number | undefined;
  /** CPU seconds less what MinIO burns idle over `seconds` of wall time. */
  busy(cpu: number | undefined, seconds: number): number | undefined;
  /** MinIO's CPU use while idle, in cores. */
  minioIdleCores: number | undefined;
  sampler: BackendCpuSampler | undefined;
}

/**
 * The seeded objects move back and forth between A/image/ and B/avatar/:
 * each run's target is the next run's source.
 */
export class Shuttle {
  here: Location;
  there: Location;

  constructor(here: Location, there: Location) {
    this.here = here;
    this.there = there;
  }

  flip(): void {
    [this.here, this.there] = [this.there, this.here];
  }
}

/** The time budget for optional runs (--budget-minutes), and what it left out. */
export class Budget {
  readonly skipped: string[] = [];

  constructor(
    private readonly startedAt: Date,
    private readonly seconds: number,
    private readonly log: (line: string) => void,
  ) {}

  elapsed(): number {
    return (Date.now() - this.startedAt.getTime()) / 1000;
  }

  /** Whether `what`, estimated at `estimateSeconds`, still fits; if not, it is recorded as skipped. */
  allows(what: string, estimateSeconds: number): boolean {
    if (this.elapsed() + estimateSeconds <= this.seconds) return true;
    this.skipped.push(what);
    this.log(`skipping ${what}: the time budget (--budget-minutes ${this.seconds / 60}) would be exceeded`);
    return false;
  }
}

/** One query on its own connection. */
export const query = queryOnce;

/** Rewrites the bench table's rows from one prefix to another, as execute would have done. */
export async function followObjects(ctx: BenchContext, from: Location, to: Location): Promise<void> {
  await query(ctx.dbUrl, `update avatars set path = $2 || substr(path, length($1) + 1) where starts_with(path, $1)`, [from.prefix, to.prefix]);
}

export async function countObjects(s3: S3Client, location: Location): Promise<number> {
  let n = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: location.bucket, Prefix: location.prefix, ContinuationToken: token }));
    n += page.KeyCount ?? page.Contents?.length ?? 0;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return n;
}

/** Throws unless every object left `from` and `count` arrived at `to`. */
export async function verifyMoved(ctx: BenchContext, what: string, from: Location, to: Location, count = ctx.options.count): Promise<void> {
  const [left, arrived] = await Promise.all([countObjects(ctx.client, from), countObjects(ctx.client, to)]);
  if (left !== 0 || arrived !== count) throw new Error(`${what}: ${arrived} of ${count} objects at the target, ${left} left at the source`);
}

export async function emptyBucket(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
    if (keys.length === 0) return;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
  }
}
