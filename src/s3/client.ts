import http from 'node:http';
import https from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../config/config.js';

// The SDK warns on every start that its 2027 releases need Node 22; the lock
// file pins a release that supports Node 20, so the warning is only noise.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Options for one process's (or one worker thread's) S3 client. */
export interface S3ClientOptions {
  /** Requests this client may have in flight; sockets are sized to it. */
  maxSockets: number;
  /** Per-request timeout in milliseconds. */
  requestTimeoutMs?: number;
}

/**
 * Builds the S3 client used everywhere. Retries are ours (see `retry.ts`),
 * so the SDK makes one attempt; keep-alive sockets avoid a TCP and TLS
 * handshake per request, which at thousands of requests per second matters.
 */
export function createS3Client(config: S3Config, options: S3ClientOptions): S3Client {
  const agentOptions = { keepAlive: true, maxSockets: options.maxSockets, maxFreeSockets: options.maxSockets };
  return new S3Client({
    endpoint: config.endpoint,
    profile: config.profile,
    region: config.region,
    forcePathStyle: config.forcePathStyle,
    maxAttempts: 1,
    // Since v3.729 the SDK sends CRC32 checksums and aws-chunked bodies by
    // default; several S3-compatible servers reject them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent(agentOptions),
      connectionTimeout: 5_000,
      requestTimeout: options.requestTimeoutMs ?? 60_000,
    },
  });
}
