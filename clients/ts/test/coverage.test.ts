// The client covers the HTTP API: every operation of a real server's /openapi.json has
// a ChorusHttp method (ROUTES names it; its type makes each name a real method), and
// every route ROUTES names is one the server has. A route added to the server without
// a client method fails here, by name.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChorusHttp, ROUTES } from '../src/index.js';
import { TestServer } from './server.js';

test('every route of the OpenAPI document has a client method', async () => {
  const server = await TestServer.start();
  try {
    const doc = (await (await fetch(`${server.baseUrl}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const served = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) {
        if (['get', 'put', 'post', 'delete', 'patch'].includes(method)) served.add(`${method.toUpperCase()} ${path}`);
      }
    }
    const covered = new Set<string>();
    for (const [method, path, name] of ROUTES) {
      const route = `${method} ${path}`;
      assert.ok(!covered.has(route), `${route} is listed twice in ROUTES (${name})`);
      covered.add(route);
      assert.equal(typeof ChorusHttp.prototype[name], 'function', `ROUTES names ${name} for ${route}: no such method`);
    }
    const missing = [...served].filter((r) => !covered.has(r)).sort();
    const unknown = [...covered].filter((r) => !served.has(r)).sort();
    assert.deepEqual(
      { missing, unknown },
      { missing: [], unknown: [] },
      'the TypeScript client and the server\'s OpenAPI document disagree: "missing" routes have no ' +
        'ChorusHttp method (add one in clients/ts/src/http.ts and to ROUTES); "unknown" ones are in ' +
        `ROUTES but not on the server.\nmissing: ${missing.join(', ') || 'none'}\nunknown: ${unknown.join(', ') || 'none'}`,
    );
  } finally {
    await server.dispose();
  }
});
