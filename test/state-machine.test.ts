/**
 * The state machine holds every state write, and its header tells the truth:
 *
 * - every SQL statement anywhere in src/ that writes the ledger's `state`
 *   (an `update ... set state`, a `state = ...` assignment, an insert or a
 *   COPY into the ledger) is inside a function of src/ledger/state-machine.ts
 *   that declares its transitions in `TRANSITIONS`;
 * - every state such a function's SQL names is one of its declared from/to
 *   states, so a new `set state = 'x'` cannot slip in undeclared;
 * - the header's `@transitions` list is exactly the declared transitions,
 *   function by function, and names only real states.
 *
 * A transition added in SQL but not to the header fails here.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import * as machine from '../src/ledger/state-machine.js';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));
const MACHINE = path.join(SRC, 'ledger', 'state-machine.ts');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? sourceFiles(full) : name.endsWith('.ts') ? [full] : [];
  });
}

/** Source without comments (block comments and `//` lines; `--` SQL comments too), same line count. */
function code(text: string): string {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, ' '))
    .split('\n')
    .map((line) => (/^\s*(\/\/|--)/.test(line) ? '' : line.replace(/\s--\s.*$/, '')))
    .join('\n');
}

/** Patterns of SQL that writes `state`. */
const WRITES_STATE = [
  /\bset\s+state\s*=/gi,
  /,\s*state\s*=\s*(?:case\b|'|\$\{|coalesce\b)/gi,
  /\binsert\s+into\s+\$\{\s*(?:ledger|sql\.id\([^)]*migration_ledger)/gi,
  /\bcopy\s+\$\{\s*ledger[^`]*\bstate\b[^`]*from\s+stdin/gi,
  /copy\s+\$\{ledgerName\}/gi,
];

/** The exported function around `offset`, if any. */
function enclosingFunction(text: string, offset: number): string | undefined {
  const before = text.slice(0, offset);
  const matches = [...before.matchAll(/^export (?:async )?function (\w+)/gm)];
  return matches.at(-1)?.[1];
}

function functionBody(text: string, name: string): string {
  const start = text.search(new RegExp(`^export (?:async )?function ${name}\\b`, 'm'));
  if (start < 0) return '';
  const rest = text.slice(start + 1);
  const next = rest.search(/^(?:export |\/\/ -{10})/m);
  return next < 0 ? rest : rest.slice(0, next);
}

const states = new Set<string>(machine.ALL_STATES);
const declared = machine.TRANSITIONS as Record<string, ReadonlyArray<readonly [string, string]>>;

t.test('every SQL statement in src/ that writes state is a declared transition of the state machine', async (t) => {
  const outside: string[] = [];
  const undeclared: string[] = [];
  let found = 0;
  const writers = new Set<string>();
  for (const file of sourceFiles(SRC)) {
    const text = code(readFileSync(file, 'utf8'));
    for (const pattern of WRITES_STATE) {
      for (const m of text.matchAll(pattern)) {
        found += 1;
        const line = text.slice(0, m.index).split('\n').length;
        const where = `${path.relative(SRC, file)}:${line}: ${m[0].trim()}`;
        if (file !== MACHINE) {
          outside.push(where);
          continue;
        }
        const fn = enclosingFunction(text, m.index!);
        if (!fn || !(fn in declared)) undeclared.push(`${where} (in ${fn ?? 'no function'})`);
        else writers.add(fn);
      }
    }
  }
  t.ok(found >= Object.keys(declared).length, `the scan finds state writes (${found})`);
  t.same(outside, [], 'no statement outside src/ledger/state-machine.ts writes state');
  t.same(undeclared, [], 'every state-writing statement is in a function listed in TRANSITIONS');
  t.same([...writers].sort(), Object.keys(declared).sort(), 'and every function in TRANSITIONS writes state');
});

t.test("each transition function's SQL names only the states it declares", async (t) => {
  const text = code(readFileSync(MACHINE, 'utf8'));
  for (const [fn, pairs] of Object.entries(declared)) {
    t.equal(typeof (machine as Record<string, unknown>)[fn], 'function', `${fn} is an exported function`);
    const allowed = new Set(pairs.flat());
    const named = [...functionBody(text, fn).matchAll(/'([a-z_]+)'/g)].map((m) => m[1]!).filter((s) => states.has(s));
    t.same(named.filter((s) => !allowed.has(s)), [], `${fn}: every state its SQL names is declared (${[...new Set(named)].join(', ')})`);
    for (const [from, to] of pairs) {
      t.ok(from === 'new' || states.has(from), `${fn}: ${from} is a state`);
      t.ok(states.has(to), `${fn}: ${to} is a state`);
      t.not(from, to, `${fn}: ${from} -> ${to} is a change`);
    }
  }
});

t.test('the header diagram lists exactly the declared transitions, function by function', async (t) => {
  const header = readFileSync(MACHINE, 'utf8').split('*/')[0]!;
  const list = /@transitions\n([\s\S]*?)\n\s*\*\s*@end/.exec(header);
  t.ok(list, 'the header has an @transitions list');
  const diagram = new Map<string, string[]>();
  for (const line of list![1]!.split('\n')) {
    const m = /^\s*\*\s+(\w+) -> (\w+)\s+(.+)$/.exec(line);
    if (!m) {
      t.fail(`unreadable diagram line: ${line}`);
      continue;
    }
    const key = `${m[1]} -> ${m[2]}`;
    t.notOk(diagram.has(key), `${key} is listed once`);
    diagram.set(key, m[3]!.split(',').map((s) => s.trim()).sort());
  }
  const fromCode = new Map<string, string[]>();
  for (const [fn, pairs] of Object.entries(declared)) {
    for (const [from, to] of pairs) {
      const key = `${from} -> ${to}`;
      fromCode.set(key, [...(fromCode.get(key) ?? []), fn].sort());
    }
  }
  t.same(
    [...fromCode.keys()].filter((k) => !diagram.has(k)),
    [],
    'every declared transition is in the diagram',
  );
  t.same(
    [...diagram.keys()].filter((k) => !fromCode.has(k)),
    [],
    'every transition in the diagram is declared by a function',
  );
  for (const [key, fns] of diagram) if (fromCode.has(key)) t.same(fns, fromCode.get(key), `${key}: made by ${fns.join(', ')}`);
});

t.test('ALL_STATES has every state, revert states included, once', async (t) => {
  for (const s of ['pending', 'copied', 'db_updated', 'reverting', 'done', 'failed', 'conflict', 'missing', 'superseded', 'archived', 'reverted']) {
    t.ok(states.has(s), `${s} is in ALL_STATES`);
  }
  t.equal(states.size, machine.ALL_STATES.length, 'no state twice');
  t.same([...machine.UNSETTLED_STATES].sort(), machine.ALL_STATES.filter((s) => !(machine.TERMINAL_STATES as readonly string[]).includes(s)).sort());
});
