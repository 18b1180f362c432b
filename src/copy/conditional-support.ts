/** The findings of the If-None-Match probe (src/copy/probe-conditional.ts), without the AWS SDK: `report` reads them. */

/** What the server did with `If-None-Match: *` over an existing object. */
export type ConditionalAnswer =
  /** 412: the existing object was kept. */
  | 'honoured'
  /** 2xx: the existing object was replaced. */
  | 'ignored'
  /** The probe could not tell (an error, no permission): see `detail`. */
  | 'unknown';

/** The probe's findings. */
export interface ConditionalSupport {
  copy: ConditionalAnswer;
  complete: ConditionalAnswer;
  /** Why an answer is unknown, or what could not be cleaned up. */
  detail?: string;
}

/** One line for `execute`'s start and `report`: what If-None-Match does on this server. */
export function describeConditionalSupport(support: ConditionalSupport): string {
  const both = support.copy === 'honoured' && support.complete === 'honoured';
  if (both) {
    return 'the S3 server honours If-None-Match on CopyObject and CompleteMultipartUpload (probed): a destination written by anyone else during the run is never overwritten, whatever --dest-check';
  }
  const what = `the S3 server ${answerText(support.copy)} If-None-Match on CopyObject and ${answerText(support.complete)} it on CompleteMultipartUpload (probed)`;
  return `${what}: --dest-check list leaves a window from each batch's listing to its copies, head one round trip per key, in which an object written at the destination by someone else would be overwritten; conditional is refused`;
}

function answerText(answer: ConditionalAnswer): string {
  return answer === 'honoured' ? 'honours' : answer === 'ignored' ? 'ignores' : 'could not be shown to honour';
}
