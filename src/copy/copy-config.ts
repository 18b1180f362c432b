import type { S3Lane } from '../s3/head-object.js';

/**
 * How a destination that may already exist is detected before a copy. In
 * every mode the copy itself also carries `If-None-Match: *` (unless
 * `--overwrite`), which a server that honours it (AWS since October 2025)
 * turns into an atomic check; the modes differ in what they do before it,
 * for servers that ignore it (MinIO).
 */
export type DestCheck =
  /**
   * The default. One ListObjectsV2 of each batch's destination key range
   * instead of a HEAD per key (keys found there are HEADed and resolved as
   * with `head`): a fresh batch costs one request instead of one per key.
   * The check is made when the batch starts.
   */
  | 'list'
  /** HEAD the destination right before each copy: the narrowest window on a server that ignores If-None-Match, at one more request per key. */
  | 'head'
  /** Nothing before the copy: trust `If-None-Match: *` alone (AWS, not MinIO). */
  | 'conditional';

/**
 * How a single-part object is copied.
 * - `clone` (the default): when the source's size and ETag are known from a
 *   listing (`plan --list`, or one listing of the batch's source range) and
 *   the ETag is a plain MD5 under the multipart threshold, one CopyObject
 *   with the COPY metadata and tagging directives, pinned to the listed ETag
 *   (`CopySourceIfMatch`); the returned ETag proves the copy. No HEAD: about
 *   one request per key. Provenance is the ledger's `copy_made`.
 * - `replace`: HEAD the source, then CopyObject with `MetadataDirective:
 *   REPLACE`, writing the source's headers back with provenance metadata
 *   naming the source (src/copy/provenance.ts): two requests per key.
 * Multipart-sized sources, sources with a multipart ETag, sources the
 * listing did not show, and runs with `--overwrite` or `--sse-kms-key-id`
 * always take `replace`.
 */
export type CopyMode = 'clone' | 'replace';

/** The `--copy-mode` when none is given (see {@link CopyMode}). */
export const DEFAULT_COPY_MODE: CopyMode = 'clone';

/** The `--dest-check` mode when none is given (see {@link DestCheck}). */
export const DEFAULT_DEST_CHECK: DestCheck = 'list';

/**
 * How one object is copied and its destination judged: the settings that
 * `execute` copies with, and that `revert` copies back with (its `migrate`
 * names the migration's target as `source` and vice versa).
 */
export interface CopyConfig {
  /** The buckets a copy reads from (`source`) and writes to (`target`). */
  migrate: { source: { bucket: string }; target: { bucket: string } };
  /** Objects larger than this are copied in parts. */
  multipartThreshold: number;
  /** Part size of multipart copies (raised as needed to stay within 10,000 parts). */
  partSize: number;
  /** Replace a different object at the destination instead of recording a conflict. */
  overwrite: boolean;
  destCheck: DestCheck;
  /** How single-part objects are copied (see {@link CopyMode}); `replace` when left out. */
  copyMode?: CopyMode;
  /** `--storage-class`: every copy gets this class instead of its source's. */
  storageClass?: string;
  /** `--sse-kms-key-id`: every copy is encrypted with this KMS key instead of as its source is. */
  sseKmsKeyId?: string;
}

/** 5 GiB: the largest single CopyObject. */
export const MAX_SINGLE_COPY = 5 * 1024 ** 3;

/**
 * The S3 side of one worker: its client, its limiter (concurrency and rate),
 * its request counters, and the copy settings. Copies, destination
 * listings, target verification and deletes, in execute and in revert, all
 * go through one.
 */
export interface WorkerS3 extends S3Lane {
  config: CopyConfig;
}
