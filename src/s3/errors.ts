/** How an S3 failure should be handled. */
export type S3ErrorKind =
  /** Worth retrying: throttling, 5xx, network trouble. */
  | 'transient'
  /** The run cannot go on: credentials, permissions, a missing bucket. */
  | 'fatal'
  /** About this one object: retrying the same request will not help. */
  | 'permanent';

interface SdkError {
  name?: string;
  code?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

const FATAL = new Set([
  'AccessDenied',
  'AllAccessDisabled',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'NoSuchBucket',
  'ExpiredToken',
  'InvalidToken',
  'AccountProblem',
  'CredentialsProviderError',
]);

const TRANSIENT = new Set([
  'SlowDown',
  'ServiceUnavailable',
  'InternalError',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'ConditionalRequestConflict',
  'OperationAborted',
  'TimeoutError',
  'RequestTimeoutException',
  'XMinioServerNotInitialized',
]);

const NETWORK = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNABORTED', 'UND_ERR_SOCKET']);

/** The error's S3 code (`NoSuchKey`, `SlowDown`, ...) or network code. */
export function s3ErrorCode(err: unknown): string {
  const e = err as SdkError;
  return e?.Code ?? e?.code ?? e?.name ?? 'Error';
}

/** The HTTP status, when the server answered at all. */
export function s3HttpStatus(err: unknown): number | undefined {
  return (err as SdkError)?.$metadata?.httpStatusCode;
}

/** The object (or the key) does not exist: a HEAD answers a bare 404 `NotFound`, a GET `NoSuchKey`. */
export function isNotFound(err: unknown): boolean {
  const code = s3ErrorCode(err);
  return code === 'NotFound' || code === 'NoSuchKey' || s3HttpStatus(err) === 404;
}

/** Decides whether an S3 error is retried, ends the run, or fails the key. */
export function classifyS3Error(err: unknown): S3ErrorKind {
  const code = s3ErrorCode(err);
  const status = s3HttpStatus(err);
  if (FATAL.has(code) || status === 403) return 'fatal';
  if (TRANSIENT.has(code) || NETWORK.has(code)) return 'transient';
  if (status !== undefined && (status >= 500 || status === 429)) return 'transient';
  // No HTTP status: the request never got a parsed answer (reset, truncated
  // body, timeout). The SDK marks some of these itself.
  if (status === undefined || (err as SdkError)?.$retryable) return 'transient';
  return 'permanent';
}

/** True for 503 SlowDown and its relatives: the server asks us to slow down. */
export function isThrottle(err: unknown): boolean {
  const code = s3ErrorCode(err);
  return code === 'SlowDown' || code === 'Throttling' || code === 'ThrottlingException' || code === 'TooManyRequestsException' || s3HttpStatus(err) === 503 || s3HttpStatus(err) === 429;
}

/** A one-line description for the ledger and the console. */
export function describeS3Error(err: unknown): string {
  const code = s3ErrorCode(err);
  const status = s3HttpStatus(err);
  const message = err instanceof Error ? err.message.replace(/\s+/g, ' ').trim() : String(err);
  const detail = message && message !== code && message !== 'UnknownError' ? `: ${message}` : '';
  return `${code}${status ? ` (HTTP ${status})` : ''}${detail}`.slice(0, 500);
}
