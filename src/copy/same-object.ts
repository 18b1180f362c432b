/**
 * The one judgement of "this object is that source's copy", used by the
 * copy (an existing destination, a resume, a 412), `--delete-only`'s target
 * check, `revert`, and the verification of a fresh copy.
 *
 * Evidence, strongest first:
 * - sizes that differ prove a difference;
 * - when both ETags are MD5s of the bytes (single-part, not SSE-KMS/SSE-C),
 *   equal ETags prove equal bytes and different ones a difference;
 * - otherwise (multipart, KMS, or nothing to compare with) only the
 *   provenance bucket-migrate writes on every copy can: the copy's metadata
 *   must name this source and the source's ETag as it is now (or, when the
 *   source is gone, as `plan --list` recorded it). A copy of an older
 *   version of the source is a difference.
 *
 * Equal sizes alone are never enough: a different object of the same size is
 * not a copy.
 */
import type { EncryptionHeaders } from './object-attributes.js';
import { bareEtag, namesSource, readProvenance, type ObjectRef } from './provenance.js';

/** What a HEAD (or a listing, or a copy's answer) says about an object. */
export interface ObjectFacts {
  size?: number | null;
  etag?: string | null;
  encryption?: EncryptionHeaders;
  metadata?: Record<string, string>;
}

/** The facts of a HeadObject answer. */
export function factsOf(head: {
  ContentLength?: number;
  ETag?: string;
  ServerSideEncryption?: string;
  SSEKMSKeyId?: string;
  SSECustomerAlgorithm?: string;
  Metadata?: Record<string, string>;
}): ObjectFacts {
  return { size: head.ContentLength, etag: head.ETag, encryption: head, metadata: head.Metadata };
}

const isKms = (sse: string | undefined) => sse === 'aws:kms' || sse === 'aws:kms:dsse';

/**
 * Whether an object's ETag is the MD5 of its bytes: single-part and not
 * KMS- or customer-key encrypted (those ETags are not MD5s).
 */
export function etagIsMd5(etag: string | null | undefined, encryption: EncryptionHeaders | undefined): boolean {
  if (!etag || etag.includes('-')) return false;
  if (encryption && (isKms(encryption.ServerSideEncryption) || encryption.SSECustomerAlgorithm)) return false;
  return true;
}

/** The outcome of a judgement, with the evidence or the reason. */
export type Judgement = { same: true; evidence: 'md5' | 'provenance' } | { same: false; reason: string };

/** What a copy is judged against: the source now, or, when it is gone, as planned. */
export interface Reference {
  /** A HEAD of the source just now. */
  fresh?: ObjectFacts;
  /** What `plan --list` recorded (size, ETag), used only without `fresh`. */
  planned?: { size: number | null; etag: string | null };
}

/**
 * Whether `copy` is a copy of the object at `source` (see the module
 * comment for the evidence accepted).
 */
export function judgeCopy(source: ObjectRef, reference: Reference, copy: ObjectFacts): Judgement {
  const ref: ObjectFacts | undefined = reference.fresh ?? (reference.planned ? { size: reference.planned.size, etag: reference.planned.etag } : undefined);
  const refSize = ref?.size == null ? undefined : Number(ref.size);
  if (refSize !== undefined && copy.size != null && refSize !== copy.size) {
    return { same: false, reason: `size ${copy.size} differs from the source's ${refSize}` };
  }
  if (ref?.etag && etagIsMd5(ref.etag, ref.encryption) && etagIsMd5(copy.etag, copy.encryption)) {
    if (bareEtag(ref.etag) === bareEtag(copy.etag)) return { same: true, evidence: 'md5' };
    return { same: false, reason: `ETag "${bareEtag(copy.etag)}" differs from the source's "${bareEtag(ref.etag)}" (MD5s of the bytes)` };
  }
  const provenance = readProvenance(copy.metadata);
  if (namesSource(provenance, source)) {
    if (!ref?.etag || !provenance!.etag || provenance!.etag === bareEtag(ref.etag)) {
      // With no reference ETag (the source gone and never listed) the name
      // is the only evidence left, and it is ours: we wrote it on the copy.
      if (ref?.etag || !reference.fresh) return { same: true, evidence: 'provenance' };
    }
    return { same: false, reason: `it is a copy of another version of the source (ETag "${provenance!.etag ?? ''}", the source's is "${bareEtag(ref?.etag)}")` };
  }
  const why = !ref ? 'the source is gone and was never listed' : 'the ETags cannot be compared (multipart or SSE-KMS)';
  return {
    same: false,
    reason: `nothing proves it is this source's copy: ${why}, and its metadata does not name s3://${source.bucket}/${source.key}` +
      (provenance ? ` (it names "${decodeURIComponentSafe(provenance.source)}")` : ''),
  };
}

function decodeURIComponentSafe(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** The result of checking a copy just made against its source. */
export type Verdict =
  | { ok: true }
  | { ok: false; reason: string }
  /** The ETags cannot be compared: the destination's size must be read to decide. */
  | { ok: 'need-size' };

/**
 * Checks a copy this run just made (its answer, or a HEAD of it) against
 * the source it was pinned to. When both ETags are MD5s they must be equal,
 * and equal MD5s mean equal bytes, so equal sizes too; no further request.
 * Otherwise (multipart, SSE-KMS) the copy is ours, made from the pinned
 * version (CopySourceIfMatch), so the size is what is left to check,
 * compared when known. The same rules as {@link judgeCopy}, minus the
 * provenance, which the copy carries by construction.
 */
export function verifyCopy(
  source: { size: number | null | undefined; etag: string | null | undefined; encryption?: EncryptionHeaders },
  copy: { size?: number | null; etag?: string | null; encryption?: EncryptionHeaders },
): Verdict {
  const sourceSize = source.size == null ? undefined : Number(source.size);
  if (copy.size != null && sourceSize !== undefined && copy.size !== sourceSize) {
    return { ok: false, reason: `copy verification failed: destination size ${copy.size} differs from the source's ${sourceSize}` };
  }
  if (etagIsMd5(source.etag, source.encryption) && etagIsMd5(copy.etag, copy.encryption)) {
    if (bareEtag(copy.etag) !== bareEtag(source.etag)) {
      return { ok: false, reason: `copy verification failed: destination ETag ${copy.etag} differs from the source's ${source.etag} (MD5)` };
    }
    return { ok: true };
  }
  if (copy.size != null && sourceSize !== undefined) return { ok: true };
  return { ok: 'need-size' };
}

/**
 * Whether a committed key's target is still the copy that was made: used
 * before its source is deleted (`--delete-only`, or a key claimed in
 * `db_updated`). The ETag recorded at the copy (`dst_etag`) is the ETag of
 * that very object, whatever its kind; without it, the target is judged as
 * a copy of the source as planned.
 */
export function judgeTarget(
  source: ObjectRef,
  recorded: { srcSize: number | null; srcEtag: string | null; dstEtag: string | null },
  target: ObjectFacts,
): Judgement {
  if (recorded.srcSize != null && target.size != null && Number(recorded.srcSize) !== target.size) {
    return { same: false, reason: `is ${target.size} bytes, the copy was ${recorded.srcSize}` };
  }
  if (recorded.dstEtag != null) {
    if (bareEtag(target.etag) === bareEtag(recorded.dstEtag)) return { same: true, evidence: 'md5' };
    return { same: false, reason: `has ETag ${bareEtag(target.etag)}, the copy had ${bareEtag(recorded.dstEtag)}` };
  }
  return judgeCopy(source, { planned: { size: recorded.srcSize, etag: recorded.srcEtag } }, target);
}

/**
 * Whether an object is still the version recorded by the plan: the same
 * key's ETag is the same whatever its kind, so no MD5 rule applies. With
 * nothing recorded only the size can be compared, or nothing.
 */
export function sameVersion(recorded: { size: number | null; etag: string | null }, current: ObjectFacts): Judgement {
  if (recorded.size != null && current.size != null && Number(recorded.size) !== current.size) {
    return { same: false, reason: `is ${current.size} bytes, the moved object was ${recorded.size}` };
  }
  if (recorded.etag != null && bareEtag(recorded.etag) !== bareEtag(current.etag)) {
    return { same: false, reason: `has ETag ${bareEtag(current.etag)}, the moved object had ${bareEtag(recorded.etag)}` };
  }
  return { same: true, evidence: 'md5' };
}
