/**
 * The `x-amz-copy-source` header value for `bucket/key`.
 *
 * The SDK does not encode it. Each path segment is percent-encoded and `/`
 * kept, so a space is `%20` (never `+`), `+` is `%2B`, and `%`, `?`, `#`,
 * `;` and non-ASCII characters survive the round trip.
 */
export function encodeCopySource(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}
