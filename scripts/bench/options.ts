/**
 * `npm run bench`'s flags: what to measure, how often, and within what time
 * budget. `--help` prints USAGE.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_DEST_CHECK } from '../../src/copy/copy-config.js';

/**
 * The --dest-check modes compared by default besides the default one.
 * `conditional` is not among them: execute refuses it (exit 2) on a server
 * that ignores If-None-Match on CopyObject, as MinIO and versitygw do, so it
 * runs only when asked for (`--dest-checks head,conditional`, against AWS).
 */
const COMPARED_DEST_CHECKS = ['head'];

export const USAGE = `Usage: npm run bench -- [options]

  --count N               keys to move in each run (default 20000)
  --threads LIST          execute --threads values to compare (default 1,2,4)
  --repeat R              repeat the ceiling/execute sequence R times (default 1)
  --ceiling-concurrency C CopyObject requests in flight for the ceiling (default 128)
  --dest-checks LIST      also run execute at the best --threads with these --dest-check modes
                          (default head; conditional only against a server that honours If-None-Match
                          on CopyObject, which MinIO does not; "" for none)
  --batch-sizes LIST      also run execute at the best --threads with these --batch-size values
  --execute-args=ARGS     extra flags for every execute run (with "=": --execute-args="--batch-size 500")
  --plan-args=ARGS        flags for the plan before each execute (default --list: sizes, ETags and
                          storage classes from one LIST per 1,000 keys; execute still HEADs each source)
  --plan-rows N           rows for the plan benchmark (default 1000000; 0 skips it)
  --claim-lanes N         concurrent connections for the claim benchmark (default 8)
  --profile               also run execute (best --threads) once under node --cpu-prof and show where its CPU goes
  --rss                   also seed --rss-count keys and measure execute's peak RSS there (slow)
  --rss-count N           keys for --rss (default 200000)
  --budget-minutes M      skip optional runs (--dest-check and --batch-size runs, second ceiling,
                          claims, second plan, re-plan) that would end after this many minutes
                          (default 10); the --threads runs and one plan always run
  --out DIR               where the JSON goes (default bench-results)
  --no-readme             do not touch README.md
  --from FILE             measure nothing: print the table and rewrite the README from a results file
  --listing-count N       keys for the parallel-listing figure, listed through a proxy adding 30 ms per
                          request (default 100000; 0 skips it)
  --list-ranges K         key ranges listed at once for that figure (default 16)
  --quick                 a smoke run: --count 2000 --threads 1,2 --plan-rows 100000 --listing-count 10000
`;

/** What `npm run bench` was asked to measure. */
export interface BenchOptions {
  count: number;
  threads: number[];
  repeat: number;
  ceilingConcurrency: number;
  destChecks: string[];
  batchSizes: number[];
  executeArgs: string[];
  planArgs: string[];
  planRows: number;
  claimLanes: number;
  rss: boolean;
  profile: boolean;
  rssCount: number;
  out: string;
  readme: boolean;
  budgetSeconds: number;
  from?: string;
  listingCount: number;
  listRanges: number;
}

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      count: { type: 'string' },
      threads: { type: 'string' },
      repeat: { type: 'string', default: '1' },
      'ceiling-concurrency': { type: 'string', default: '128' },
      'dest-checks': { type: 'string', default: COMPARED_DEST_CHECKS.join(',') },
      'batch-sizes': { type: 'string', default: '' },
      'execute-args': { type: 'string', default: '' },
      'plan-args': { type: 'string', default: '--list' },
      'plan-rows': { type: 'string' },
      'claim-lanes': { type: 'string', default: '8' },
      rss: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'rss-count': { type: 'string', default: '200000' },
      out: { type: 'string', default: 'bench-results' },
      'budget-minutes': { type: 'string', default: '10' },
      from: { type: 'string' },
      'no-readme': { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      'listing-count': { type: 'string' },
      'list-ranges': { type: 'string', default: '16' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name: string, value: string, min: number) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}, got ${value}`);
    return n;
  };
  const list = (name: string, value: string) =>
    value
      .split(',')
      .filter((v) => v.trim() !== '')
      .map((v) => int(name, v.trim(), 1));
  const quick = values.quick;
  return {
    count: int('count', values.count ?? (quick ? '2000' : '20000'), 1),
    threads: list('threads', values.threads ?? (quick ? '1,2' : '1,2,4')),
    repeat: int('repeat', values.repeat, 1),
    ceilingConcurrency: int('ceiling-concurrency', values['ceiling-concurrency'], 1),
    destChecks: values['dest-checks'].split(',').map((v) => v.trim()).filter((v) => v !== '' && v !== DEFAULT_DEST_CHECK),
    batchSizes: list('batch-sizes', values['batch-sizes']),
    executeArgs: values['execute-args'].split(/\s+/).filter(Boolean),
    planArgs: values['plan-args'].split(/\s+/).filter(Boolean),
    planRows: int('plan-rows', values['plan-rows'] ?? (quick ? '100000' : '1000000'), 0),
    claimLanes: int('claim-lanes', values['claim-lanes'], 1),
    rss: values.rss,
    profile: values.profile,
    rssCount: int('rss-count', values['rss-count'], 1),
    out: values.out,
    readme: !values['no-readme'],
    budgetSeconds: int('budget-minutes', values['budget-minutes'], 1) * 60,
    from: values.from,
    listingCount: int('listing-count', values['listing-count'] ?? (quick ? '10000' : '100000'), 0),
    listRanges: int('list-ranges', values['list-ranges'], 1),
  };
}

/** The value after `flag` in an argument list, if any. */
export function flagValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}
