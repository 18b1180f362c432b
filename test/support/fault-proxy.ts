/**
 * A fault-injecting HTTP proxy for S3 traffic, on loopback, between the tool
 * and a real S3 server (MinIO). Built on node:http only.
 *
 * Point the tool's `S3_ENDPOINT` at `proxy.endpoint`. Requests are forwarded
 * with their original headers, the Host header included: SigV4 signs the
 * Host, and the client signed the proxy's host:port, so the upstream server
 * must see exactly that to accept the signature (MinIO does; it verifies
 * against the Host header it receives).
 *
 * Faults, per eligible request (see `match`):
 * - `errorFor`: a chosen S3 error answer instead of forwarding (deterministic).
 * - `slowDownAboveRps`: 503 SlowDown once a token bucket of that many
 *   requests per second (burst: one second's worth) is empty.
 * - one random draw against the cumulative rates, in this order:
 *   `slowDownRate` (503 SlowDown), `internalErrorRate` (500 InternalError),
 *   `resetBeforeRate` (socket destroyed; nothing forwarded), `resetAfterRate`
 *   (forwarded, upstream answered, so the copy or delete happened, then the
 *   client's socket is destroyed before any of the answer reaches it),
 *   `truncateRate` (forwarded; the status, headers and half the body are
 *   sent, then the socket is destroyed). The rates add up: 0.02 each of five
 *   kinds is 10% of requests failing.
 * - `latencyMs`: added before forwarding, to every eligible request.
 *
 * `stats.injected` counts by kind: `slowDown`, `slowDownAboveRps`,
 * `internalError`, `resetBefore`, `resetAfter`, `truncate`, `latency`,
 * `errorFor`. An unreachable upstream (MinIO stopped) resets the client's
 * connection, as the network would; that is counted as `upstreamError`.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface FaultConfig {
  slowDownRate?: number;
  internalErrorRate?: number;
  resetBeforeRate?: number;
  resetAfterRate?: number;
  truncateRate?: number;
  latencyMs?: number;
  /** 503 SlowDown for requests above this many per second (token bucket) */
  slowDownAboveRps?: number;
  /** only requests for which this returns true are eligible for faults */
  match?: (req: { method: string; url: string }) => boolean;
  /** answer these with a given S3 error instead of forwarding: e.g. InvalidObjectState 403 for chosen keys */
  errorFor?: (req: { method: string; url: string; headers: http.IncomingHttpHeaders }) => { status: number; code: string; message?: string } | undefined;
}

export interface FaultProxy {
  endpoint: string;
  stats: { requests: number; forwarded: number; injected: Record<string, number> };
  setConfig(config: FaultConfig): void;
  close(): Promise<void>;
}

type Fault = 'slowDown' | 'internalError' | 'resetBefore' | 'resetAfter' | 'truncate';

const RANDOM_FAULTS: Array<[Fault, keyof FaultConfig]> = [
  ['slowDown', 'slowDownRate'],
  ['internalError', 'internalErrorRate'],
  ['resetBefore', 'resetBeforeRate'],
  ['resetAfter', 'resetAfterRate'],
  ['truncate', 'truncateRate'],
];

/**
 * A fault proxy in front of a test environment's S3 server, closed when
 * `owner` (a tap test) ends, and the CLI environment (`S3_ENDPOINT`) that
 * sends the tool's requests through it. Observers and fixtures keep
 * talking to the server directly.
 */
export async function proxyTestEnv(
  owner: { teardown(fn: () => unknown): void },
  env: { env: NodeJS.ProcessEnv; s3: { endpoint: string } },
  initial: FaultConfig = {},
): Promise<{ proxy: FaultProxy; cliEnv: NodeJS.ProcessEnv }> {
  const proxy = await startFaultProxy(env.s3.endpoint, initial);
  owner.teardown(() => proxy.close());
  return { proxy, cliEnv: { ...env.env, S3_ENDPOINT: proxy.endpoint } };
}

/** Starts the proxy on 127.0.0.1, on a free port, forwarding to `upstream` (http://host:port). */
export async function startFaultProxy(upstream: string, initial: FaultConfig = {}): Promise<FaultProxy> {
  const target = new URL(upstream);
  if (target.protocol !== 'http:') throw new Error(`fault proxy: upstream must be http://, got ${upstream}`);
  let config: FaultConfig = { ...initial };
  const stats: FaultProxy['stats'] = { requests: 0, forwarded: 0, injected: {} };
  const count = (kind: string) => (stats.injected[kind] = (stats.injected[kind] ?? 0) + 1);

  // Token bucket for slowDownAboveRps.
  let tokens = config.slowDownAboveRps ?? 0;
  let lastRefill = Date.now();
  const takeToken = (rps: number): boolean => {
    const now = Date.now();
    tokens = Math.min(rps, tokens + ((now - lastRefill) / 1000) * rps);
    lastRefill = now;
    if (tokens >= 1) {
      tokens -= 1;
      return true;
    }
    return false;
  };

  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const sockets = new Set<Socket>();

  const server = http.createServer((req, res) => {
    stats.requests += 1;
    const info = { method: req.method ?? 'GET', url: req.url ?? '/' };
    const current = config;
    const eligible = current.match ? safeMatch(current.match, info) : true;
    if (!eligible) return void forward(req, res, 'none');

    const chosen = current.errorFor?.({ ...info, headers: req.headers });
    if (chosen) {
      count('errorFor');
      return void answerError(req, res, chosen.status, chosen.code, chosen.message ?? chosen.code);
    }
    if (current.slowDownAboveRps && current.slowDownAboveRps > 0 && !takeToken(current.slowDownAboveRps)) {
      count('slowDownAboveRps');
      return void answerError(req, res, 503, 'SlowDown', 'Please reduce your request rate.');
    }
    let fault: Fault | 'none' = 'none';
    const roll = Math.random();
    let edge = 0;
    for (const [kind, key] of RANDOM_FAULTS) {
      edge += (current[key] as number | undefined) ?? 0;
      if (roll < edge) {
        fault = kind;
        break;
      }
    }
    const go = () => {
      switch (fault) {
        case 'slowDown':
          count('slowDown');
          return answerError(req, res, 503, 'SlowDown', 'Please reduce your request rate.');
        case 'internalError':
          count('internalError');
          return answerError(req, res, 500, 'InternalError', 'We encountered an internal error. Please try again.');
        case 'resetBefore':
          count('resetBefore');
          req.socket.destroy();
          return;
        default:
          return forward(req, res, fault);
      }
    };
    if (current.latencyMs && current.latencyMs > 0) {
      count('latency');
      setTimeout(go, current.latencyMs);
    } else go();
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // A client that vanishes mid-request must not crash the proxy.
  server.on('clientError', (_err, socket) => socket.destroy());

  function forward(req: http.IncomingMessage, res: http.ServerResponse, fault: Fault | 'none'): void {
    const upstreamReq = http.request(
      {
        host: target.hostname,
        port: target.port || 80,
        method: req.method,
        path: req.url,
        // Unchanged, Host included: the signature covers it.
        headers: req.headers,
        agent,
      },
      (upstreamRes) => {
        stats.forwarded += 1;
        if (fault === 'resetAfter') {
          // The request was applied upstream; the client never hears.
          count('resetAfter');
          upstreamRes.resume();
          upstreamRes.once('end', () => req.socket.destroy());
          upstreamRes.once('error', () => req.socket.destroy());
          return;
        }
        if (fault === 'truncate') {
          count('truncate');
          const chunks: Buffer[] = [];
          upstreamRes.on('data', (c: Buffer) => chunks.push(c));
          upstreamRes.once('error', () => req.socket.destroy());
          upstreamRes.once('end', () => {
            const body = Buffer.concat(chunks);
            if (req.method === 'HEAD' || body.length < 2) {
              // Nothing to cut in half: a HEAD's Content-Length describes the
              // object, not this answer. Hang up before the headers instead.
              req.socket.destroy();
              return;
            }
            const headers = { ...upstreamRes.headers };
            delete headers['transfer-encoding'];
            // Promise the whole body, deliver half of it, then hang up.
            headers['content-length'] = String(body.length);
            res.writeHead(upstreamRes.statusCode ?? 502, headers);
            const keep = Math.floor(body.length / 2);
            if (keep > 0) res.write(body.subarray(0, keep));
            // Let the partial body leave before the reset.
            setTimeout(() => req.socket.destroy(), 5);
          });
          return;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, upstreamRes.rawHeaders);
        upstreamRes.pipe(res);
        upstreamRes.once('error', () => req.socket.destroy());
      },
    );
    upstreamReq.once('error', () => {
      count('upstreamError');
      req.socket.destroy();
    });
    req.once('error', () => upstreamReq.destroy());
    // The client hung up: stop the upstream request too.
    res.once('close', () => {
      if (!res.writableFinished && fault === 'none') upstreamReq.destroy();
    });
    req.pipe(upstreamReq);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stats,
    setConfig(next: FaultConfig) {
      config = { ...next };
      tokens = config.slowDownAboveRps ?? 0;
      lastRefill = Date.now();
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        agent.destroy();
      });
      return closing;
    },
  };
}

function safeMatch(match: (req: { method: string; url: string }) => boolean, info: { method: string; url: string }): boolean {
  try {
    return match(info);
  } catch {
    return false;
  }
}

/** Answers with an S3-style XML error, after reading the request body. */
function answerError(req: http.IncomingMessage, res: http.ServerResponse, status: number, code: string, message: string): void {
  const requestId = randomBytes(8).toString('hex').toUpperCase();
  const body =
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message>` +
    `<Resource>${xmlEscape(req.url ?? '/')}</Resource><RequestId>${requestId}</RequestId></Error>`;
  const send = () => {
    if (res.headersSent || res.destroyed) return;
    const headers: http.OutgoingHttpHeaders = {
      'content-type': 'application/xml',
      'x-amz-request-id': requestId,
      'x-amz-error-code': code,
      'x-amz-error-message': message.replace(/[^\x20-\x7e]/g, ' '),
    };
    if (req.method === 'HEAD') {
      res.writeHead(status, headers);
      res.end();
    } else {
      headers['content-length'] = Buffer.byteLength(body);
      res.writeHead(status, headers);
      res.end(body);
    }
  };
  // Drain the body first, so the client is not cut off while still sending.
  if (req.complete) send();
  else {
    req.resume();
    req.once('end', send);
    req.once('error', () => res.destroy());
  }
}

function xmlEscape(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}
