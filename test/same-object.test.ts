/**
 * The one judgement of "same object" (src/copy/same-object.ts) and the
 * provenance format (src/copy/provenance.ts), without a server: issue 13
 * finding 2, including SSE-KMS, which the local MinIO cannot serve. On main
 * (f844d21) these modules did not exist; its sameObject accepted any
 * same-size object once either ETag was multipart, ignored SSE-KMS, and
 * accepted anything when the source was gone and never listed.
 */
import t from 'tap';
import { readProvenance, sourceName, withProvenance } from '../src/copy/provenance.js';
import { judgeCopy, judgeTarget, verifyCopy } from '../src/copy/same-object.js';

t.test('the judgement, without a server (finding 2)', async (t) => {
  const src = { bucket: 'legacy', key: 'image/a b.png' };
  const md5 = '"5d41402abc4b2a76b9719d911017c592"';
  const other = '"00000000000000000000000000000000"';
  const meta = withProvenance({ owner: 'u1', 'bucket-migrate-source': 'old' }, src, md5);
  t.same(meta, { owner: 'u1', 'bucket-migrate-source': sourceName(src), 'bucket-migrate-source-etag': md5.replace(/"/g, '') }, 'a copy of a copy names its immediate source; user keys kept');
  t.equal(sourceName(src), 'legacy%2Fimage%2Fa%20b.png');
  t.match(sourceName({ bucket: 'b', key: 'k'.repeat(1000) }), /^sha256:[\w-]{43}$/, 'a long key is named by hash');
  t.same(readProvenance({ 'Bucket-Migrate-Source': 'x' }), { source: 'x', etag: undefined });

  t.same(judgeCopy(src, { fresh: { size: 5, etag: md5 } }, { size: 5, etag: md5 }), { same: true, evidence: 'md5' });
  t.match(judgeCopy(src, { fresh: { size: 5, etag: md5 } }, { size: 5, etag: other }), { same: false });
  // The old sameObject accepted any same-size object once either ETag was multipart.
  t.match(judgeCopy(src, { fresh: { size: 5, etag: md5 } }, { size: 5, etag: `${other.slice(0, -1)}-2"` }), { same: false, reason: /nothing proves/ }, 'same size, multipart, no provenance: not a copy');
  t.same(judgeCopy(src, { fresh: { size: 5, etag: md5 } }, { size: 5, etag: `${other.slice(0, -1)}-2"`, metadata: meta }), { same: true, evidence: 'provenance' }, 'multipart with provenance');
  // KMS: ETags are not MD5s; a copy after a crash before markCopied is recognised by its provenance.
  const kms = { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'k' };
  t.same(judgeCopy(src, { fresh: { size: 5, etag: md5, encryption: kms } }, { size: 5, etag: other, encryption: kms, metadata: meta }), { same: true, evidence: 'provenance' }, 'KMS copy with provenance: no false conflict');
  t.match(judgeCopy(src, { fresh: { size: 5, etag: md5, encryption: kms } }, { size: 5, etag: other, encryption: kms }), { same: false });
  t.match(judgeCopy(src, { fresh: { size: 5, etag: other, encryption: kms } }, { size: 5, etag: '"1-2"', metadata: meta }), { same: false, reason: /another version/ }, 'a copy of an older version');
  // The source gone and never listed: only provenance.
  t.match(judgeCopy(src, {}, { size: 5, etag: md5 }), { same: false, reason: /never listed/ });
  t.same(judgeCopy(src, {}, { size: 5, etag: md5, metadata: meta }), { same: true, evidence: 'provenance' });
  t.match(judgeCopy(src, {}, { size: 5, etag: md5, metadata: withProvenance({}, { bucket: 'legacy', key: 'image/other.png' }, md5) }), { same: false, reason: /names "legacy\/image\/other\.png"/ });
  t.match(judgeCopy(src, { planned: { size: 6, etag: md5 } }, { size: 5, etag: md5, metadata: meta }), { same: false, reason: /size 5/ });

  t.same(judgeTarget(src, { srcSize: 5, srcEtag: null, dstEtag: other }, { size: 5, etag: other }), { same: true, evidence: 'md5' });
  t.match(judgeTarget(src, { srcSize: 5, srcEtag: null, dstEtag: other }, { size: 5, etag: md5 }), { same: false, reason: /has ETag/ });
  t.match(judgeTarget(src, { srcSize: 5, srcEtag: md5, dstEtag: null }, { size: 5, etag: '"x-2"' }), { same: false }, 'no recorded copy ETag, no provenance: refused');
  t.same(verifyCopy({ size: '5' as unknown as number, etag: md5 }, { etag: md5 }), { ok: true }, 'a bigint size read as a string');
});

