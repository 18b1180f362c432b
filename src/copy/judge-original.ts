import { HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import type { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { readProvenance, type ObjectRef } from './provenance.js';
import { factsOf, judgeCopy, sameVersion, type Judgement } from './same-object.js';

/** The S3 side `judgeOriginal` needs. */
export interface S3Access {
  s3: S3Client;
  limiter: AdaptiveLimiter;
  stats: RequestStats;
}

/**
 * `revert`: whether the object found at a key's original location is the
 * object that was moved, so its rows may point at it again. The target copy
 * is the evidence: its provenance names the original and the ETag the
 * original had when it was copied. Without a target copy, or with one
 * written before provenance existed, the original is compared with what
 * the plan recorded (size, and ETag with `plan --list`).
 */
export async function judgeOriginal(
  ctx: S3Access,
  original: ObjectRef,
  originalHead: HeadObjectCommandOutput,
  target: ObjectRef,
  recorded: { size: number | null; etag: string | null },
): Promise<Judgement> {
  let targetHead: HeadObjectCommandOutput | undefined;
  try {
    targetHead = await sendWithRetry(ctx.limiter, ctx.stats, () => ctx.s3.send(new HeadObjectCommand({ Bucket: target.bucket, Key: target.key })));
  } catch (err) {
    const code = s3ErrorCode(err);
    if (!(code === 'NotFound' || code === 'NoSuchKey' || s3HttpStatus(err) === 404)) throw err;
  }
  if (targetHead && readProvenance(targetHead.Metadata)) {
    const verdict = judgeCopy(original, { fresh: factsOf(originalHead) }, factsOf(targetHead));
    if (verdict.same) return verdict;
    return { same: false, reason: `is not the object that was moved (the target copy: ${verdict.reason})` };
  }
  return sameVersion(recorded, factsOf(originalHead));
}
