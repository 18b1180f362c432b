/**
 * Provenance: the user metadata bucket-migrate writes on every copy, naming
 * the object it was copied from and that object's ETag. It is the evidence
 * that a destination is this source's copy when the bytes cannot prove it:
 * multipart and SSE-KMS ETags are not MD5s, and once a source is deleted
 * there is nothing left to compare with.
 *
 * Two keys, both plain ASCII (S3 sends user metadata as HTTP headers):
 * - `bucket-migrate-source`: `bucket/key` of the source, percent-encoded
 *   (`encodeURIComponent`) when that fits in {@link MAX_NAMED_SOURCE}
 *   characters, otherwise `sha256:` and the base64url SHA-256 of
 *   `bucket/key` (S3 allows 2 KB of user metadata in all, and a key may be
 *   1,024 bytes, 3 KB percent-encoded);
 * - `bucket-migrate-source-etag`: the source's ETag, without quotes.
 *
 * A copy of a copy names its immediate source: the keys are replaced, never
 * accumulated. Every other user metadata key of the source is kept as is.
 */
import { createHash } from 'node:crypto';

/** The metadata key naming the source (S3 lower-cases metadata keys). */
export const SOURCE_KEY = 'bucket-migrate-source';
/** The metadata key holding the source's ETag. */
export const SOURCE_ETAG_KEY = 'bucket-migrate-source-etag';

/** Sources whose percent-encoded `bucket/key` is longer than this are named by hash. */
export const MAX_NAMED_SOURCE = 256;

/** An S3 object's location. */
export interface ObjectRef {
  bucket: string;
  key: string;
}

/** A quoted or bare ETag, bare (no quotes, no weak marker). */
export const bareEtag = (etag: string | null | undefined): string => (etag ?? '').replace(/^W\//, '').replace(/"/g, '');

/** The value of {@link SOURCE_KEY} for `source`. */
export function sourceName(source: ObjectRef): string {
  const full = `${source.bucket}/${source.key}`;
  const encoded = encodeURIComponent(full);
  if (encoded.length <= MAX_NAMED_SOURCE) return encoded;
  return `sha256:${createHash('sha256').update(full, 'utf8').digest('base64url')}`;
}

/**
 * The user metadata of a copy of `source`: the source's own keys (minus
 * any provenance it carries from an earlier copy) plus ours.
 */
export function withProvenance(
  sourceMetadata: Record<string, string> | undefined,
  source: ObjectRef,
  sourceEtag: string | null | undefined,
): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(sourceMetadata ?? {})) {
    const lower = k.toLowerCase();
    if (lower !== SOURCE_KEY && lower !== SOURCE_ETAG_KEY) metadata[k] = v;
  }
  metadata[SOURCE_KEY] = sourceName(source);
  if (sourceEtag) metadata[SOURCE_ETAG_KEY] = bareEtag(sourceEtag);
  return metadata;
}

/** What an object's metadata says it was copied from, if anything. */
export interface Provenance {
  /** As written: percent-encoded `bucket/key` or `sha256:...`. */
  source: string;
  /** Bare ETag of the source at the copy, when recorded. */
  etag?: string;
}

/** Reads provenance from an object's user metadata (keys in any case). */
export function readProvenance(metadata: Record<string, string> | undefined): Provenance | undefined {
  if (!metadata) return undefined;
  let source: string | undefined;
  let etag: string | undefined;
  for (const [k, v] of Object.entries(metadata)) {
    const lower = k.toLowerCase();
    if (lower === SOURCE_KEY) source = v;
    else if (lower === SOURCE_ETAG_KEY) etag = v;
  }
  return source ? { source, etag: etag ? bareEtag(etag) : undefined } : undefined;
}

/** Whether `provenance` names `source`. */
export function namesSource(provenance: Provenance | undefined, source: ObjectRef): boolean {
  return !!provenance && provenance.source === sourceName(source);
}

/** The user metadata without our keys: what the user wrote. */
export function userMetadata(metadata: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata ?? {}).filter(([k]) => ![SOURCE_KEY, SOURCE_ETAG_KEY].includes(k.toLowerCase())));
}
