// Drift check: protocol.ts against the Rust source it mirrors (chorus-proto). Each
// `satisfies Record<keyof T, true>` list is checked against the TS type by the compiler
// and against the Rust struct here, so a field added on either side fails the build.
// The API's JSON types (model.ts) need no such check: they are generated from the
// server's OpenAPI document (scripts/gen-ts-api), and scripts/test fails when the
// committed src/generated/api.ts is not what the server's schema generates.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  CLIENT_OPS,
  CloseCode,
  ERROR_CODES,
  SERVER_OPS,
  shouldReconnect,
  type AckFrame,
  type ErrorFrame,
  type EventFrame,
  type HelloFrame,
  type Member,
  type ScopeResume,
  type UserProfile,
} from '../src/index.js';
import { repoRoot } from './server.js';

const root = repoRoot();
const proto = (file: string) => readFileSync(join(root, 'crates/chorus-proto/src', file), 'utf8');
const codes = proto('codes.rs');

/** The body of `fn name(...) ... { ... }` up to the next function. */
function fnBody(src: string, name: string): string {
  const start = src.indexOf(`fn ${name}(`);
  assert.ok(start >= 0, `fn ${name} not found`);
  const next = src.indexOf('\n    pub ', start + 1);
  return src.slice(start, next < 0 ? undefined : next);
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c, i: number) => (i ? '_' : '') + c.toLowerCase());

test('error codes match ErrorCode::as_str', () => {
  const pairs = [...fnBody(codes, 'as_str').matchAll(/Self::(\w+)\s*=>\s*"(\w+)"/g)];
  assert.ok(pairs.length >= 10);
  for (const [, variant, text] of pairs) assert.equal(snake(variant!), text, 'serde rename_all = snake_case');
  assert.deepEqual(pairs.map((p) => p[2]), [...ERROR_CODES]);
});

test('close codes match CloseCode::code', () => {
  const pairs = [...fnBody(codes, 'code').matchAll(/Self::(\w+)\s*=>\s*(\d+)/g)];
  assert.ok(pairs.length >= 7);
  assert.deepEqual(Object.fromEntries(pairs.map(([, name, n]) => [name, Number(n)])), { ...CloseCode });
});

test('shouldReconnect matches CloseCode::should_reconnect', () => {
  const body = fnBody(codes, 'should_reconnect');
  const pattern = /matches!\(code,\s*([^)]*)\)/.exec(body)?.[1];
  assert.ok(pattern, 'should_reconnect is a matches! over the code');
  const rust = (code: number) =>
    pattern.split('|').some((alt) => {
      const [lo, hi] = alt.trim().split('..=').map(Number);
      return hi === undefined ? code === lo : code >= lo! && code <= hi;
    });
  for (let code = 1000; code < 5000; code++) assert.equal(shouldReconnect(code), rust(code), `code ${code}`);
});

test('client ops match KNOWN_OPS', () => {
  const known = /const KNOWN_OPS: &\[&str\] = &\[([^\]]*)\]/.exec(proto('client.rs'))?.[1];
  assert.ok(known);
  assert.deepEqual([...known.matchAll(/"(\w+)"/g)].map((m) => m[1]), [...CLIENT_OPS]);
});

/** Field names (as serialized) of `pub struct name` / `pub enum name`'s fields, with
 * `#[serde(rename = …)]` applied and `#[serde(flatten)]` fields expanded from `src`. */
function rustFields(src: string, name: string, sources: string[] = [src]): string[] {
  const start = new RegExp(`pub (?:struct|enum) ${name}\\s*\\{`).exec(src);
  assert.ok(start, `struct ${name} not found`);
  const body = src.slice(start.index + start[0].length, src.indexOf('\n}', start.index));
  const fields: string[] = [];
  let attrs = '';
  for (const line of body.split('\n').map((l) => l.trim())) {
    if (line.startsWith('#[')) attrs += line;
    const field = /^pub (\w+): ([\w<>]+)/.exec(line);
    if (!field) continue;
    const [, fname, ty] = field;
    if (attrs.includes('flatten')) {
      const inner = sources.find((s) => new RegExp(`pub struct ${ty} \\{`).test(s));
      assert.ok(inner, `flattened ${ty} not found`);
      fields.push(...rustFields(inner, ty!, sources));
    } else {
      fields.push(/rename = "(\w+)"/.exec(attrs)?.[1] ?? fname!);
    }
    attrs = '';
  }
  return fields;
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

test('server frames match chorus-proto/src/server.rs', () => {
  const server = proto('server.rs');
  const variants = /pub enum ServerFrame \{([\s\S]*?)\n\}/.exec(server)?.[1] ?? '';
  assert.deepEqual([...variants.matchAll(/^\s{4}(\w+)\s*[({]/gm)].map((m) => snake(m[1]!)), [...SERVER_OPS]);

  const hello = { op: 1, v: 1, session_id: 1, user_id: 1, heartbeat_ms: 1, scopes: 1, offsets: 1 } satisfies Record<keyof HelloFrame, 1>;
  const ack = { op: 1, id: 1, scope: 1, recovered: 1, offset: 1, scopes: 1 } satisfies Record<keyof AckFrame, 1>;
  const resume = { recovered: 1, offset: 1, error: 1 } satisfies Record<keyof ScopeResume, 1>;
  const error = { op: 1, id: 1, code: 1, message: 1 } satisfies Record<keyof ErrorFrame, 1>;
  const event = { op: 1, scope: 1, offset: 1, type: 1, data: 1, wake: 1 } satisfies Record<keyof EventFrame, 1>;
  const cases: [string, object][] = [
    ['HelloFrame', hello],
    ['AckFrame', ack],
    ['ScopeResume', resume],
    ['ErrorFrame', error],
    ['EventFrame', event],
  ];
  for (const [name, keys] of cases) {
    const ts = Object.keys(keys).filter((k) => k !== 'op'); // `op` is the enum's tag
    assert.deepEqual(sorted(ts), sorted(rustFields(server, name)), name);
  }
});

test('what others see of a user carries no webhook and no admin flag', () => {
  // The types are generated from the server's schema (src/generated/api.ts; scripts/test
  // checks it is current), so these hold for what the server sends.
  type Private = Extract<keyof UserProfile, 'webhook_url' | 'is_admin'>;
  const noPrivateFields: [Private] extends [never] ? true : false = true;
  const membersAreProfiles: [Member['user']] extends [UserProfile] ? ([UserProfile] extends [Member['user']] ? true : false) : false = true;
  assert.ok(noPrivateFields && membersAreProfiles);
});

test('shouldReconnect follows the protocol table', () => {
  for (const code of [1001, 1006, 1011, 1012, 1013, 3001, 3002, 3008, 3499]) assert.ok(shouldReconnect(code), `${code}`);
  for (const code of [1000, 1005, 1009, 3500, 3501, 3502, 3999, 4000]) assert.ok(!shouldReconnect(code), `${code}`);
});
