/**
 * The fault proxy against real MinIO: each fault does what it says, and in
 * particular "reset after" means the request really was applied upstream.
 */
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import t from 'tap';
import { createTestS3Client, getBytes, objectExists, putObject, setupTestEnv } from './helpers/services.js';
import { startFaultProxy, type FaultProxy } from './support/fault-proxy.js';

function errorOf(err: unknown): { name?: string; code?: string; status?: number } {
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  return { name: e?.name, code: e?.code, status: e?.$metadata?.httpStatusCode };
}

/** What `promise` rejected with, or undefined when it resolved. */
const rejectionOf = (promise: Promise<unknown>): Promise<unknown> => promise.then(
  () => undefined,
  (e: unknown) => e,
);

t.test('fault proxy', async (t) => {
  const env = await setupTestEnv(t);
  const proxy: FaultProxy = await startFaultProxy(env.s3.endpoint);
  t.teardown(() => proxy.close());
  const client: S3Client = createTestS3Client(env.s3, { endpoint: proxy.endpoint, maxAttempts: 1 });
  t.teardown(() => client.destroy());
  const direct = env.s3client;
  const bucket = env.sourceBucket;

  await t.test('passes requests through unchanged (SigV4 over the original Host)', async (t) => {
    await putObject(client, bucket, 'plain/a.txt', 'hello');
    t.equal((await getBytes(client, bucket, 'plain/a.txt'))?.toString(), 'hello');
    t.equal((await getBytes(direct, bucket, 'plain/a.txt'))?.toString(), 'hello');
    t.ok(proxy.stats.forwarded >= 2);
    t.same(proxy.stats.injected, {});
  });

  await t.test('503 SlowDown and 500 InternalError, nothing forwarded', async (t) => {
    proxy.setConfig({ slowDownRate: 1 });
    const slow = await putObject(client, bucket, 'x/slow', 'x').catch(errorOf);
    t.match(slow, { name: 'SlowDown', status: 503 });
    proxy.setConfig({ internalErrorRate: 1 });
    const internal = await putObject(client, bucket, 'x/internal', 'x').catch(errorOf);
    t.match(internal, { name: 'InternalError', status: 500 });
    proxy.setConfig({});
    t.notOk(await objectExists(direct, bucket, 'x/slow'));
    t.notOk(await objectExists(direct, bucket, 'x/internal'));
    t.equal(proxy.stats.injected.slowDown, 1);
    t.equal(proxy.stats.injected.internalError, 1);
  });

  await t.test('reset before: the request never reaches the server', async (t) => {
    proxy.setConfig({ resetBeforeRate: 1 });
    const err = await rejectionOf(putObject(client, bucket, 'x/reset-before', 'x'));
    proxy.setConfig({});
    t.ok(err, 'the client sees a failure');
    t.equal(errorOf(err).status, undefined, 'with no HTTP status');
    t.notOk(await objectExists(direct, bucket, 'x/reset-before'));
  });

  await t.test('reset after: applied upstream, but the client never hears', async (t) => {
    proxy.setConfig({ resetAfterRate: 1 });
    const err = await rejectionOf(putObject(client, bucket, 'x/reset-after', 'applied'));
    proxy.setConfig({});
    t.ok(err, 'the client sees a failure');
    t.equal((await getBytes(direct, bucket, 'x/reset-after'))?.toString(), 'applied', 'yet the object was written');
  });

  await t.test('truncated responses fail the read', async (t) => {
    await putObject(direct, bucket, 'x/big', Buffer.alloc(64 * 1024, 7));
    proxy.setConfig({ truncateRate: 1 });
    const get = await client
      .send(new GetObjectCommand({ Bucket: bucket, Key: 'x/big' }))
      .then((r) => r.Body!.transformToByteArray())
      .then(
        (bytes) => ({ ok: true, length: bytes.length }),
        (e: unknown) => ({ ok: false, error: String(e) }),
      );
    t.notOk(get.ok, `a truncated GET body is an error: ${JSON.stringify(get)}`);
    const list = await client.send(new ListObjectsV2Command({ Bucket: bucket })).then(
      () => 'ok',
      (e: unknown) => errorOf(e),
    );
    t.not(list, 'ok', 'a truncated listing is an error');
    proxy.setConfig({});
    t.ok((proxy.stats.injected.truncate ?? 0) >= 2);
  });

  await t.test('errorFor answers chosen requests with a chosen error', async (t) => {
    proxy.setConfig({
      errorFor: (req) => (req.url.includes('frozen') ? { status: 403, code: 'InvalidObjectState', message: 'archived' } : undefined),
    });
    const frozen = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'x/frozen' })).catch(errorOf);
    t.match(frozen, { name: 'InvalidObjectState', status: 403 });
    t.equal((await getBytes(client, bucket, 'plain/a.txt'))?.toString(), 'hello', 'others pass');
    proxy.setConfig({});
  });

  await t.test('match limits which requests are eligible', async (t) => {
    proxy.setConfig({ internalErrorRate: 1, match: (req) => req.method === 'PUT' });
    t.equal((await getBytes(client, bucket, 'plain/a.txt'))?.toString(), 'hello', 'GET is not eligible');
    const put = await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'x/m', Body: 'x' })).catch(errorOf);
    t.match(put, { name: 'InternalError' });
    proxy.setConfig({});
  });

  await t.test('slowDownAboveRps throttles past the rate', async (t) => {
    proxy.setConfig({ slowDownAboveRps: 5 });
    const results = await Promise.all(
      Array.from({ length: 30 }, () =>
        getBytes(client, bucket, 'plain/a.txt').then(
          () => 'ok',
          (e: unknown) => errorOf(e).name,
        ),
      ),
    );
    proxy.setConfig({});
    const throttled = results.filter((r) => r === 'SlowDown').length;
    t.ok(throttled >= 20 && throttled <= 25, `about 25 of 30 throttled (got ${throttled})`);
    t.equal(proxy.stats.injected.slowDownAboveRps, throttled);
  });

  await t.test('latency is added', async (t) => {
    proxy.setConfig({ latencyMs: 300 });
    const started = Date.now();
    await getBytes(client, bucket, 'plain/a.txt');
    proxy.setConfig({});
    t.ok(Date.now() - started >= 290, `took ${Date.now() - started} ms`);
  });

  await t.test('mixed rates roughly match', async (t) => {
    const before = proxy.stats.requests;
    const injectedBefore = Object.values(proxy.stats.injected).reduce((a, b) => a + b, 0);
    proxy.setConfig({ slowDownRate: 0.1, internalErrorRate: 0.1 });
    for (let i = 0; i < 200; i++) await getBytes(client, bucket, 'plain/a.txt').catch(() => undefined);
    proxy.setConfig({});
    const injected = Object.values(proxy.stats.injected).reduce((a, b) => a + b, 0) - injectedBefore;
    t.equal(proxy.stats.requests - before, 200);
    t.ok(injected > 15 && injected < 70, `~40 of 200 injected (got ${injected})`);
  });
});
