/**
 * Measures, on a live S3 server, the behaviours the tool's safety depends on
 * and that S3-compatible servers are known to differ in. Each probe writes a
 * known object, tries the operation, and reads back what really happened:
 * the server's answer alone is not trusted (a 200 to a conditional write
 * proves nothing until the bytes are read back).
 */
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  GetBucketEncryptionCommand,
  CreateMultipartUploadCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getBytes, putObject } from '../helpers/services.js';

/**
 * What a conditional write (`If-None-Match: *`) onto an existing key did:
 * `honoured` (412, the old object intact), `ignored` (accepted, the old
 * object replaced), or `refused` (another error, e.g. 501; the old object
 * intact).
 */
export type ConditionalOutcome = 'honoured' | 'ignored' | 'refused';

/** What keeping an attribute through PUT and CopyObject did. */
export type KeptOutcome = 'kept' | 'lost' | 'refused';

/** Whether an ETag matched another: `same` or `differs`. */
export type EtagOutcome = 'same' | 'differs';

/** How a listing shows a multipart object's ETag: `suffixed` (`<hash>-<parts>`, as AWS) or `plain`. */
export type MultipartEtagOutcome = 'suffixed' | 'plain';

/** The measured behaviours of one server. */
export interface S3Capabilities {
  /** `If-None-Match: *` on PutObject. */
  putIfNoneMatch: ConditionalOutcome;
  /** `If-None-Match: *` on CopyObject. */
  copyIfNoneMatch: ConditionalOutcome;
  /** `If-None-Match: *` on CompleteMultipartUpload. */
  completeIfNoneMatch: ConditionalOutcome;
  /** User metadata on PutObject, then through CopyObject (directive COPY). */
  userMetadata: KeptOutcome;
  /** Tags on PutObject (`x-amz-tagging`), then through CopyObject (tagging directive COPY). */
  tagging: KeptOutcome;
  /** Tags given to CreateMultipartUpload, as the tool's multipart copy does. */
  multipartTagging: KeptOutcome;
  /** SSE-S3 (`AES256`) on PutObject: `kept` means HEAD reports it back. */
  sseS3: KeptOutcome;
  /**
   * `x-amz-copy-source-if-match` with an ETag the source does not have: a
   * copy pinned to the version a listing saw, with no HEAD (issue 14).
   */
  copySourceIfMatch: ConditionalOutcome;
  /** A single-part source's ETag, given back as the copy's (CopyObjectResult). */
  copyEtag: EtagOutcome;
  /**
   * CopyObject with the metadata directive COPY and the tagging directive
   * REPLACE: the copy carries exactly the given tags and the source's user
   * metadata and Content-Type. Where provenance could go with no HEAD.
   */
  copyTaggingReplace: KeptOutcome;
  /** A listing's ETag for a multipart object: whether it says so (`-<parts>`). */
  multipartListEtag: MultipartEtagOutcome;
  /**
   * GetBucketEncryption of a bucket with no default encryption set: what
   * `execute` reads once to decide whether sources may be cloned
   * (src/copy/copy-mode.ts): `absent` (404), `unsupported` (501), `empty`,
   * `rules_<algorithms>`, or `error<status>_<code>`.
   */
  bucketEncryptionUnset: string;
}

/** The capabilities in a fixed order, for the README table and the test's output. */
export const CAPABILITY_NAMES: ReadonlyArray<keyof S3Capabilities> = [
  'putIfNoneMatch',
  'copyIfNoneMatch',
  'completeIfNoneMatch',
  'userMetadata',
  'tagging',
  'multipartTagging',
  'sseS3',
  'copySourceIfMatch',
  'copyEtag',
  'copyTaggingReplace',
  'multipartListEtag',
  'bucketEncryptionUnset',
];

/** Runs every probe in `bucket` under `prefix` (the keys are left behind for the caller's cleanup). */
export async function measureCapabilities(client: S3Client, bucket: string, prefix: string): Promise<S3Capabilities> {
  return {
    putIfNoneMatch: await probePutIfNoneMatch(client, bucket, `${prefix}put-inm`),
    copyIfNoneMatch: await probeCopyIfNoneMatch(client, bucket, `${prefix}copy-inm`),
    completeIfNoneMatch: await probeCompleteIfNoneMatch(client, bucket, `${prefix}complete-inm`),
    userMetadata: await probeUserMetadata(client, bucket, `${prefix}metadata`),
    tagging: await probeTagging(client, bucket, `${prefix}tagging`),
    multipartTagging: await probeMultipartTagging(client, bucket, `${prefix}mp-tagging`),
    sseS3: await probeSseS3(client, bucket, `${prefix}sse-s3`),
    copySourceIfMatch: await probeCopySourceIfMatch(client, bucket, `${prefix}copy-source-if-match`),
    copyEtag: await probeCopyEtag(client, bucket, `${prefix}copy-etag`),
    copyTaggingReplace: await probeCopyTaggingReplace(client, bucket, `${prefix}copy-tagging-replace`),
    multipartListEtag: await probeMultipartListEtag(client, bucket, `${prefix}mp-list-etag`),
    bucketEncryptionUnset: await probeBucketEncryption(client, bucket),
  };
}

const OLD = Buffer.from('the object that was there first');
const NEW = Buffer.from('a conditional write that should not have landed');

async function conditionalOutcome(client: S3Client, bucket: string, key: string, write: () => Promise<unknown>): Promise<ConditionalOutcome> {
  await putObject(client, bucket, key, OLD);
  let status: number | undefined;
  try {
    await write();
  } catch (error) {
    status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? -1;
  }
  const now = await getBytes(client, bucket, key);
  if (now?.equals(OLD)) return status === 412 ? 'honoured' : 'refused';
  if (status === undefined) return 'ignored';
  throw new Error(`${key}: the write failed (HTTP ${status}) yet the object changed`);
}

function probePutIfNoneMatch(client: S3Client, bucket: string, key: string): Promise<ConditionalOutcome> {
  return conditionalOutcome(client, bucket, key, () => putObject(client, bucket, key, NEW, { IfNoneMatch: '*' }));
}

async function probeCopyIfNoneMatch(client: S3Client, bucket: string, key: string): Promise<ConditionalOutcome> {
  await putObject(client, bucket, `${key}.source`, NEW);
  return conditionalOutcome(client, bucket, key, () =>
    client.send(new CopyObjectCommand({ Bucket: bucket, Key: key, CopySource: `${bucket}/${key}.source`, IfNoneMatch: '*' })),
  );
}

/**
 * A multipart upload of one part (the last, here the only, part may be
 * smaller than 5 MiB), with extra fields for its create and complete
 * requests: how the probes exercise multipart behaviour on small bodies.
 */
async function onePartUpload(
  client: S3Client,
  bucket: string,
  key: string,
  body: Uint8Array,
  extra: { create?: { Tagging?: string }; complete?: { IfNoneMatch?: string } } = {},
): Promise<void> {
  const created = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...extra.create }));
  const part = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: created.UploadId, PartNumber: 1, Body: body, ContentLength: body.length }));
  await client.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId: created.UploadId,
      MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
      ...extra.complete,
    }),
  );
}

async function probeCompleteIfNoneMatch(client: S3Client, bucket: string, key: string): Promise<ConditionalOutcome> {
  return conditionalOutcome(client, bucket, key, async () => {
    await onePartUpload(client, bucket, key, NEW, { complete: { IfNoneMatch: '*' } });
  });
}

/** Runs `attempt`; a thrown error means the server refused the attribute. */
async function keptOutcome(attempt: () => Promise<boolean>): Promise<KeptOutcome> {
  try {
    return (await attempt()) ? 'kept' : 'lost';
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status !== undefined && status >= 400 && status < 600) return 'refused';
    throw error;
  }
}

function probeUserMetadata(client: S3Client, bucket: string, key: string): Promise<KeptOutcome> {
  return keptOutcome(async () => {
    const metadata = { owner: 'user-42', 'uploaded-by': 'mobile app' };
    await putObject(client, bucket, key, OLD, { Metadata: metadata });
    await client.send(new CopyObjectCommand({ Bucket: bucket, Key: `${key}.copy`, CopySource: `${bucket}/${key}` }));
    const copy = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${key}.copy` }));
    // Compared as sorted entries: versitygw returns metadata from extended attributes in no fixed order.
    const entries = (m: Record<string, string>) => JSON.stringify(Object.entries(m).sort(([a], [b]) => (a < b ? -1 : 1)));
    return entries(copy.Metadata ?? {}) === entries(metadata);
  });
}

async function sortedTags(client: S3Client, bucket: string, key: string): Promise<string> {
  const result = await client.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }));
  return (result.TagSet ?? []).map((tag) => `${tag.Key}=${tag.Value}`).sort().join('&');
}

const TAGGING = 'retention=7%20years&team=growth';
const TAGS = 'retention=7 years&team=growth';

function probeTagging(client: S3Client, bucket: string, key: string): Promise<KeptOutcome> {
  return keptOutcome(async () => {
    await putObject(client, bucket, key, OLD, { Tagging: TAGGING });
    await client.send(new CopyObjectCommand({ Bucket: bucket, Key: `${key}.copy`, CopySource: `${bucket}/${key}`, TaggingDirective: 'COPY' }));
    return (await sortedTags(client, bucket, key)) === TAGS && (await sortedTags(client, bucket, `${key}.copy`)) === TAGS;
  });
}

function probeMultipartTagging(client: S3Client, bucket: string, key: string): Promise<KeptOutcome> {
  return keptOutcome(async () => {
    await onePartUpload(client, bucket, key, OLD, { create: { Tagging: TAGGING } });
    return (await sortedTags(client, bucket, key)) === TAGS;
  });
}

function probeSseS3(client: S3Client, bucket: string, key: string): Promise<KeptOutcome> {
  return keptOutcome(async () => {
    await putObject(client, bucket, key, OLD, { ServerSideEncryption: 'AES256' });
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return head.ServerSideEncryption === 'AES256';
  });
}

async function probeCopySourceIfMatch(client: S3Client, bucket: string, key: string): Promise<ConditionalOutcome> {
  await putObject(client, bucket, `${key}.source`, NEW);
  return conditionalOutcome(client, bucket, key, () =>
    client.send(
      new CopyObjectCommand({ Bucket: bucket, Key: key, CopySource: `${bucket}/${key}.source`, CopySourceIfMatch: '"0123456789abcdef0123456789abcdef"' }),
    ),
  );
}

async function probeCopyEtag(client: S3Client, bucket: string, key: string): Promise<EtagOutcome> {
  await putObject(client, bucket, `${key}.source`, NEW);
  const source = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${key}.source` }));
  const copy = await client.send(new CopyObjectCommand({ Bucket: bucket, Key: key, CopySource: `${bucket}/${key}.source` }));
  return copy.CopyObjectResult?.ETag === source.ETag ? 'same' : 'differs';
}

/**
 * A provenance tag as it would be written: `bucket/key` of the source. Tag
 * values allow letters, digits, spaces and `+ - = . _ : / @` only (MinIO and
 * versitygw answer InvalidTag to a `%`), so a key with other characters
 * would be named by its SHA-256. Measured by hand on versitygw 1.8.0: it
 * counts a value's percent-encoded length against the 256-character limit
 * (`x/` and 254 letters is refused, 256 letters is not), so a long name
 * costs 3 characters per `/` there.
 */
const PROVENANCE_TAG = 'legacy-s3/image/avatar-32425.png';

function probeCopyTaggingReplace(client: S3Client, bucket: string, key: string): Promise<KeptOutcome> {
  return keptOutcome(async () => {
    const metadata = { owner: 'user-42' };
    await putObject(client, bucket, `${key}.source`, OLD, { Metadata: metadata, ContentType: 'image/png', Tagging: TAGGING });
    await client.send(
      new CopyObjectCommand({
        Bucket: bucket,
        Key: key,
        CopySource: `${bucket}/${key}.source`,
        MetadataDirective: 'COPY',
        TaggingDirective: 'REPLACE',
        Tagging: `bucket-migrate-source=${encodeURIComponent(PROVENANCE_TAG)}`,
      }),
    );
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return (
      (await sortedTags(client, bucket, key)) === `bucket-migrate-source=${PROVENANCE_TAG}` &&
      head.Metadata?.owner === 'user-42' &&
      Object.keys(head.Metadata ?? {}).length === 1 &&
      head.ContentType === 'image/png'
    );
  });
}

async function probeMultipartListEtag(client: S3Client, bucket: string, key: string): Promise<MultipartEtagOutcome> {
  await onePartUpload(client, bucket, key, OLD);
  const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: key }));
  const etag = listed.Contents?.find((o) => o.Key === key)?.ETag ?? '';
  return /-1"?$/.test(etag) ? 'suffixed' : 'plain';
}

async function probeBucketEncryption(client: S3Client, bucket: string): Promise<string> {
  try {
    const answer = await client.send(new GetBucketEncryptionCommand({ Bucket: bucket }));
    const rules = (answer.ServerSideEncryptionConfiguration?.Rules ?? []).map((r) => r.ApplyServerSideEncryptionByDefault?.SSEAlgorithm ?? '?');
    return rules.length === 0 ? 'empty' : `rules_${rules.join('_').replace(/\W/g, '')}`;
  } catch (error) {
    const e = error as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    // One word for the README table: what src/copy/copy-mode.ts makes of it.
    if (status === 404) return 'absent';
    if (status === 501) return 'unsupported';
    return `error${status ?? ''}_${e.Code ?? e.name ?? 'Error'}`;
  }
}
