/**
 * `plan --inventory s3://bucket/path/manifest.json`: an S3 Inventory report
 * serves as the listing of the source (at hundreds of millions of keys a
 * listing takes hours; an inventory is delivered daily or weekly).
 *
 * The format (AWS S3 user guide, "Locating your inventory list" and
 * "Inventory manifest"): `manifest.json` names the source bucket, the
 * `fileFormat` (only CSV is read here), the `fileSchema` (the columns, e.g.
 * "Bucket, Key, Size, ETag, StorageClass") and the data `files`, each with
 * its `key`, `size` and `MD5checksum` (of the gzip file as stored). Each
 * data file is gzip CSV without a header, every field in double quotes,
 * and keys URL-encoded.
 *
 * Each data file is downloaded to a temporary file while its MD5 is
 * computed, checked against the manifest, then streamed through gunzip and
 * a line reader into the same page-at-a-time reconciliation as `plan
 * --list` (src/plan/list-source.ts): memory stays constant. Keys outside
 * the source prefix, folder markers, delete markers and non-current
 * versions are skipped. Planned keys the inventory does not hold become
 * `missing` only after every file was read.
 *
 * An inventory is up to a day or a week old: keys written since are not in
 * it (a later `plan --list` or `plan --inventory` adds them) and keys
 * deleted since are found by `execute` (a missing source becomes
 * `missing`; a changed one fails its CopySourceIfMatch).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { FatalError, UsageError } from '../errors.js';
import type { LedgerContext } from '../ledger/state-machine.js';
import { markUnlistedMissing } from '../ledger/state-machine.js';
import { withDbRetry } from '../db/retry.js';
import { describeS3Error } from '../s3/errors.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { reconcilePage, type ListConfig, type ListResult } from './list-source.js';

/** The parts of manifest.json that are read. */
export interface InventoryManifest {
  sourceBucket: string;
  fileFormat: string;
  fileSchema: string;
  files: Array<{ key: string; size?: number; MD5checksum?: string }>;
}

/** Where an inventory's manifest is, from `s3://bucket/key`. */
export function parseManifestUrl(url: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([^/]+)\/(.+\.json)$/.exec(url);
  if (!match) throw new UsageError(`--inventory ${url}: give the manifest as s3://bucket/path/manifest.json`);
  return { bucket: match[1]!, key: match[2]! };
}

/** Rows per reconciliation statement, as a listing page. */
const PAGE = 1000;
/** Data files read at once. */
const FILES_AT_ONCE = 4;

/**
 * Reconciles the ledger with the inventory at `manifestUrl` (see the file
 * header). `config.bucket` must be the inventory's source bucket.
 */
export async function reconcileWithInventory(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  s3: S3Client,
  manifestUrl: string,
  config: ListConfig,
  onPage?: (listed: number) => void,
  read?: InventoryManifest,
): Promise<ListResult> {
  const where = parseManifestUrl(manifestUrl);
  const get = getter(s3, where.bucket);
  const manifest = read ?? (await readInventoryManifest(s3, manifestUrl, config.bucket));
  const columns = manifest.fileSchema.split(',').map((c) => c.trim());
  const column = (name: string) => columns.indexOf(name);
  const at = { key: column('Key'), size: column('Size'), etag: column('ETag'), storageClass: column('StorageClass'), isLatest: column('IsLatest'), deleteMarker: column('IsDeleteMarker') };

  const result: ListResult = { listed: 0, orphansAdded: 0, orphansSkipped: 0, missing: 0 };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bucket-migrate-inventory-'));
  try {
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < manifest.files.length; i = next++) {
        const file = manifest.files[i]!;
        const local = path.join(dir, `${i}.csv.gz`);
        await download(await get(file.key), local, file.MD5checksum, `s3://${where.bucket}/${file.key}`);
        let page: Array<{ Key: string; Size?: number; ETag?: string; StorageClass?: string }> = [];
        const flush = async () => {
          if (page.length === 0) return;
          const found = await reconcilePage(ctx, config, page);
          page = [];
          result.listed += found.listed;
          result.orphansAdded += found.orphansAdded;
          result.orphansSkipped += found.orphansSkipped;
          onPage?.(result.listed);
        };
        const lines = createInterface({ input: createReadStream(local).pipe(createGunzip()), crlfDelay: Infinity });
        for await (const line of lines) {
          if (line === '') continue;
          const fields = parseCsvLine(line);
          if (at.deleteMarker >= 0 && fields[at.deleteMarker] === 'true') continue;
          if (at.isLatest >= 0 && fields[at.isLatest] === 'false') continue;
          const key = decodeKey(fields[at.key] ?? '');
          // Outside the prefix, or a "folder" marker: not an avatar (as with --list).
          if (!key.startsWith(config.sourcePrefix) || key === config.sourcePrefix || key.endsWith('/')) continue;
          const size = at.size >= 0 && fields[at.size] ? Number(fields[at.size]) : undefined;
          const etag = at.etag >= 0 && fields[at.etag] ? quoteEtag(fields[at.etag]!) : undefined;
          const storageClass = at.storageClass >= 0 && fields[at.storageClass] ? fields[at.storageClass] : undefined;
          page.push({ Key: key, Size: size, ETag: etag, StorageClass: storageClass });
          if (page.length >= PAGE) await flush();
        }
        await flush();
        await rm(local, { force: true });
      }
    };
    await Promise.all(Array.from({ length: Math.min(FILES_AT_ONCE, manifest.files.length) }, worker));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  result.missing = await withDbRetry(() => markUnlistedMissing(ctx, config.runId));
  return result;
}

/** GetObject with retries, failures as one line. */
function getter(s3: S3Client, bucket: string) {
  const limiter = new AdaptiveLimiter({ maxInFlight: FILES_AT_ONCE + 1 });
  const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  return (key: string) =>
    sendWithRetry(limiter, stats, () => s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).catch((err: unknown) => {
      throw new FatalError(`reading the inventory s3://${bucket}/${key} failed: ${describeS3Error(err)}`);
    });
}

/**
 * Reads and checks the manifest at `manifestUrl`: CSV, a Key column, and
 * `sourceBucket` = `bucket`. `plan` calls this before touching the ledger,
 * so a wrong inventory changes nothing.
 */
export async function readInventoryManifest(s3: S3Client, manifestUrl: string, bucket: string): Promise<InventoryManifest> {
  const where = parseManifestUrl(manifestUrl);
  const object = await getter(s3, where.bucket)(where.key);
  const manifest = parseManifest(await object.Body!.transformToString(), manifestUrl);
  if (manifest.sourceBucket !== bucket) {
    throw new UsageError(`--inventory ${manifestUrl} lists bucket ${manifest.sourceBucket}, not SOURCE_BUCKET ${bucket}: give that bucket's inventory`);
  }
  if (!manifest.fileSchema.split(',').map((c) => c.trim()).includes('Key')) {
    throw new UsageError(`--inventory ${manifestUrl}: its fileSchema has no Key column`);
  }
  return manifest;
}

/** Checks manifest.json's shape; one line naming the problem otherwise. */
export function parseManifest(text: string, url: string): InventoryManifest {
  let json: Partial<InventoryManifest>;
  try {
    json = JSON.parse(text) as Partial<InventoryManifest>;
  } catch {
    throw new UsageError(`--inventory ${url} is not JSON: give the manifest.json of an S3 Inventory report`);
  }
  if (typeof json.sourceBucket !== 'string' || typeof json.fileSchema !== 'string' || !Array.isArray(json.files)) {
    throw new UsageError(`--inventory ${url} has no sourceBucket, fileSchema or files: give the manifest.json of an S3 Inventory report`);
  }
  if (json.fileFormat !== 'CSV') {
    throw new UsageError(`--inventory ${url} is in ${String(json.fileFormat)} format; only CSV inventories are read: configure the inventory as CSV`);
  }
  return json as InventoryManifest;
}

/** Saves `object` to `local`, checking its MD5 against the manifest's when given. */
async function download(object: { Body?: unknown }, local: string, md5: string | undefined, name: string): Promise<void> {
  const hash = createHash('md5');
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  await pipeline(object.Body as Readable, tap, createWriteStream(local));
  const got = hash.digest('hex');
  if (md5 && got !== md5.toLowerCase()) {
    throw new FatalError(`inventory file ${name} has MD5 ${got}, the manifest says ${md5}: the report is corrupt or was overwritten; nothing from it was recorded`);
  }
}

/** Splits one CSV line: fields in double quotes (a quote doubled inside), or bare. */
export function parseCsvLine(line: string): string[] {
  const fields: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let value = '';
      i += 1;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) {
          value += line.slice(i);
          i = line.length;
          break;
        }
        value += line.slice(i, q);
        if (line[q + 1] === '"') {
          value += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      fields.push(value);
      i += 1; // the comma
    } else {
      const comma = line.indexOf(',', i);
      const end = comma < 0 ? line.length : comma;
      fields.push(line.slice(i, end));
      i = end + 1;
    }
  }
  return fields;
}

/**
 * A key as the inventory writes it, URL-encoded. Decoded as a form value
 * (`+` is a space, then percent escapes): a literal `+` is always written
 * `%2B`, so this is right whether spaces were written `+` or `%20`.
 */
export function decodeKey(encoded: string): string {
  return decodeURIComponent(encoded.replace(/\+/g, ' '));
}

/** ETags in the ledger are as ListObjectsV2 gives them: in double quotes. */
function quoteEtag(etag: string): string {
  return etag.startsWith('"') ? etag : `"${etag}"`;
}
