import type { HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import { headIfExists, type S3Lane } from '../s3/head-object.js';
import { readProvenance, type ObjectRef } from './provenance.js';
import { factsOf, judgeCopy, sameVersion, type Judgement } from './same-object.js';

/**
 * `revert`: whether the object found at a key's original location is the
 * object that was moved, so its rows may point at it again. The target copy
 * is the evidence: its provenance names the original and the ETag the
 * original had when it was copied. Without a target copy, or with one
 * written before provenance existed, the original is compared with what
 * the plan recorded (size, and ETag with `plan --list`).
 */
export async function judgeOriginal(
  ctx: S3Lane,
  original: ObjectRef,
  originalHead: HeadObjectCommandOutput,
  target: ObjectRef,
  recorded: { size: number | null; etag: string | null },
): Promise<Judgement> {
  const targetHead = await headIfExists(ctx, target.bucket, target.key);
  if (targetHead && readProvenance(targetHead.Metadata)) {
    const verdict = judgeCopy(original, { fresh: factsOf(originalHead) }, factsOf(targetHead));
    if (verdict.same) return verdict;
    return { same: false, reason: `is not the object that was moved (the target copy: ${verdict.reason})` };
  }
  return sameVersion(recorded, factsOf(originalHead));
}
