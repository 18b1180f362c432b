/**
 * Where a process's CPU time went, from the V8 CPU profiles `node
 * --cpu-prof` writes (one per thread, worker threads included): self time
 * grouped by who runs it.
 */
import fs from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Sampled milliseconds, idle excluded, over all threads. */
  totalMs: number;
  /** Share of the sampled time per group, largest first. */
  groups: Array<{ group: string; share: number }>;
  /** The functions with the most self time. */
  top: Array<{ fn: string; share: number }>;
}

function groupOf(url: string, functionName: string): string {
  if (functionName === '(garbage collector)') return 'garbage collection';
  if (functionName === '(program)') return 'V8/native (program)';
  if (url === '' ) return functionName === 'writeLatin1String' || functionName === 'writev' || functionName === 'writeUtf8String' ? 'socket writes (kernel)' : `native: ${functionName}`;
  if (/node_modules\/(@aws-sdk|@smithy|@aws-crypto|fast-xml-parser)\//.test(url)) return 'AWS SDK (build, sign, parse requests)';
  if (/node_modules\/(pg|pg-protocol|pg-pool|pg-types|pgpass)\//.test(url)) return 'pg (Postgres driver)';
  if (/node_modules\/kysely\//.test(url)) return 'kysely';
  if (/node_modules\/piscina\//.test(url)) return 'piscina';
  if (/node_modules\//.test(url)) return 'other packages';
  if (url.startsWith('node:internal/crypto')) return 'node crypto (SigV4 HMAC/SHA-256)';
  if (/^node:(_http|http|https|net|internal\/streams|stream|internal\/stream_base|events|internal\/http)/.test(url)) return 'node http/net/streams';
  if (url.startsWith('node:')) return 'node other';
  if (/\/dist\/(src|workers)\//.test(url)) return 'bucket-migrate';
  return 'other';
}

/** Reads every `.cpuprofile` in `dir`. */
export function summarizeProfiles(dir: string): ProfileSummary {
  const groups = new Map<string, number>();
  const functions = new Map<string, number>();
  let total = 0;
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    const profile = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as CpuProfile;
    const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
    for (let i = 0; i < profile.samples.length; i++) {
      const node = nodes.get(profile.samples[i]!);
      const dt = profile.timeDeltas[i] ?? 0;
      if (!node || node.callFrame.functionName === '(idle)') continue;
      total += dt;
      const { url, functionName } = node.callFrame;
      const group = groupOf(url, functionName);
      groups.set(group, (groups.get(group) ?? 0) + dt);
      const short = url.replace(/.*node_modules\//, '').replace(/.*\/dist\//, 'dist/');
      const fn = `${functionName || '(anonymous)'}${short ? ` (${short})` : ''}`;
      functions.set(fn, (functions.get(fn) ?? 0) + dt);
    }
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return {
    totalMs: total / 1000,
    groups: sorted(groups).map(([group, t]) => ({ group, share: t / total })),
    top: sorted(functions)
      .slice(0, 12)
      .map(([fn, t]) => ({ fn, share: t / total })),
  };
}
