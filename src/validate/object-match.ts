import { bareEtag } from './list-objects.js';

/** What the ledger recorded about the object a row should name. */
export interface Expected {
  state: string | null;
  src_size: number | null;
  src_etag: string | null;
  dst_etag: string | null;
}

// States in which the tool put the object at the destination itself, so
// the ledger's size and ETag describe it. A `conflict` key's destination
// was someone else's object, and is not compared.
const COPIED_STATES = new Set(['copied', 'db_updated', 'done', 'superseded']);

const isMultipart = (etag: string | null) => etag !== null && etag.includes('-');

/**
 * Why an object does not match what the ledger recorded, or null when it
 * matches (or nothing was recorded). The size is from `plan --list`; the
 * copy's ETag is compared exactly; the source ETag only when both are
 * single-part, since a multipart copy changes the ETag.
 */
export function mismatch(expected: Expected, actual: { size: number; etag: string | null }): string | null {
  if (!expected.state || !COPIED_STATES.has(expected.state)) return null;
  if (expected.src_size !== null && Number(expected.src_size) !== actual.size) {
    return `object is ${actual.size} bytes, the source listed at plan was ${expected.src_size}`;
  }
  const etag = bareEtag(actual.etag);
  const copied = bareEtag(expected.dst_etag);
  if (copied !== null && etag !== null && copied !== etag) {
    return `object's ETag ${etag} differs from the copy's ${copied}: it was replaced after the move`;
  }
  const source = bareEtag(expected.src_etag);
  if (copied === null && source !== null && etag !== null && !isMultipart(source) && !isMultipart(etag) && source !== etag) {
    return `object's ETag ${etag} differs from the source's ${source} listed at plan`;
  }
  return null;
}
