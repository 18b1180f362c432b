/**
 * An S3 client for a local server (MinIO, versitygw, or S3_ENDPOINT), for
 * the tests and scripts: its credentials passed explicitly, so it never
 * depends on the process's own AWS_* environment. Kept apart from
 * test/helpers/services.ts because that module loads tap, whose output a
 * script must not print.
 */
import { S3Client } from '@aws-sdk/client-s3';
import type { LocalS3 } from './local-minio.js';

export function localS3Client(s3: Pick<LocalS3, 'endpoint' | 'region' | 'accessKeyId' | 'secretAccessKey'>, overrides: ConstructorParameters<typeof S3Client>[0] = {}): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    // Same as the app's client: S3-compatible servers vary in checksum support.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...overrides,
  });
}
