/**
 * What makes a moved object "the same object": the attributes a copy must
 * carry over (storage class, encryption, tags) and the checks that prove the
 * bytes arrived intact. Pure decisions, plus the one tagging read a
 * multipart copy needs, so they are testable without a server.
 */
import { GetObjectTaggingCommand, type S3Client, type ServerSideEncryption, type StorageClass } from '@aws-sdk/client-s3';
import type { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';

/** The encryption headers of an object, as HEAD and CopyObject report them. */
export interface EncryptionHeaders {
  ServerSideEncryption?: string;
  SSEKMSKeyId?: string;
  SSECustomerAlgorithm?: string;
}

/** The encryption parameters to send on CopyObject / CreateMultipartUpload. */
export interface CopyEncryption {
  ServerSideEncryption?: ServerSideEncryption;
  SSEKMSKeyId?: string;
}

/** Options of `execute` that override what the source has. */
export interface AttributeOverrides {
  /** `--storage-class`: every copy gets this class. */
  storageClass?: string;
  /** `--sse-kms-key-id`: every copy is encrypted with this KMS key. */
  sseKmsKeyId?: string;
}

const isKms = (sse: string | undefined) => sse === 'aws:kms' || sse === 'aws:kms:dsse';

/**
 * Why a source cannot be copied, or undefined. SSE-C objects need the
 * customer's key on every read; we never have it, and copying without it is
 * impossible, so such a key is refused rather than retried.
 */
export function refusalFor(source: EncryptionHeaders): string | undefined {
  if (source.SSECustomerAlgorithm) {
    return `source is encrypted with a customer-provided key (SSE-C, ${source.SSECustomerAlgorithm}): bucket-migrate cannot copy it; not copied`;
  }
  return undefined;
}

/**
 * Whether an S3 error says the source is SSE-C encrypted. AWS answers a copy
 * of such an object with 400 InvalidRequest naming server-side encryption,
 * and a HEAD (no body) with a bare 400.
 */
export function isSseCError(err: unknown, wasHead: boolean): boolean {
  const e = err as { name?: string; Code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  if (e?.$metadata?.httpStatusCode !== 400) return false;
  if (wasHead) return true;
  return /server side encryption|customer[- ]provided|SSECustomer/i.test(e.message ?? '');
}

/** The reason recorded for a source refused because of SSE-C. */
export const SSE_C_REASON =
  'source is encrypted with a customer-provided key (SSE-C): bucket-migrate cannot copy it without the key; not copied';

/**
 * Encryption for the copy: `--sse-kms-key-id` wins; otherwise the source's
 * own (SSE-KMS or DSSE-KMS with the same key id, or SSE-S3). With nothing
 * known, nothing is sent and the target bucket's default encryption applies.
 */
export function copyEncryption(source: EncryptionHeaders | undefined, overrides: AttributeOverrides): CopyEncryption {
  if (overrides.sseKmsKeyId) return { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: overrides.sseKmsKeyId };
  const sse = source?.ServerSideEncryption;
  if (isKms(sse)) return { ServerSideEncryption: sse as ServerSideEncryption, SSEKMSKeyId: source?.SSEKMSKeyId };
  if (sse === 'AES256') return { ServerSideEncryption: 'AES256' };
  return {};
}

/**
 * Whether the copy came out encrypted as asked. Only what was asked for is
 * checked: with nothing asked, the target bucket's default is acceptable.
 */
export function encryptionMatches(wanted: CopyEncryption, got: EncryptionHeaders): boolean {
  if (!wanted.ServerSideEncryption) return true;
  if (got.ServerSideEncryption !== wanted.ServerSideEncryption) return false;
  // S3 reports the key as an ARN; the source's HEAD does too, a flag may not.
  if (wanted.SSEKMSKeyId && got.SSEKMSKeyId) {
    return got.SSEKMSKeyId === wanted.SSEKMSKeyId || got.SSEKMSKeyId.endsWith(`/${wanted.SSEKMSKeyId}`) || got.SSEKMSKeyId.endsWith(`:${wanted.SSEKMSKeyId}`);
  }
  return true;
}

/**
 * The storage class to send: `--storage-class`, else the source's (from the
 * listing or a HEAD). STANDARD is S3's default and is not sent, which keeps
 * servers that know few classes happy. Undefined also when the class is
 * unknown: S3 then writes STANDARD.
 */
export function copyStorageClass(recorded: string | null | undefined, overrides: AttributeOverrides): StorageClass | undefined {
  const cls = overrides.storageClass ?? recorded ?? undefined;
  return cls && cls !== 'STANDARD' ? (cls as StorageClass) : undefined;
}

// The judgement of "same object" lives in src/copy/same-object.ts; re-exported for existing callers.
export { etagIsMd5, verifyCopy, type Verdict } from '../copy/same-object.js';

/**
 * The source's tags as the `Tagging` value of CreateMultipartUpload (a URL
 * query string), or undefined when it has none. CopyObject keeps tags with
 * `TaggingDirective: COPY`; a multipart copy has no such directive.
 */
export async function readTagging(
  s3: S3Client,
  limiter: AdaptiveLimiter,
  stats: RequestStats,
  bucket: string,
  key: string,
): Promise<string | undefined> {
  const tagging = await sendWithRetry(limiter, stats, () => s3.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key })));
  return taggingQuery(tagging.TagSet ?? []);
}

/** `[{Key:'a',Value:'1'}]` → `a=1`, each part URL-encoded. */
export function taggingQuery(tags: Array<{ Key?: string; Value?: string }>): string | undefined {
  const parts = tags.filter((t) => t.Key !== undefined).map((t) => `${encodeURIComponent(t.Key!)}=${encodeURIComponent(t.Value ?? '')}`);
  return parts.length > 0 ? parts.join('&') : undefined;
}
