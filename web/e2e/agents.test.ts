// Agents in a real browser (issue #19): a streaming reply grows on screen as the agent
// appends, the loop-guard notice comes and goes (and is there after a reload), Stop
// cancels a reply, and receipts show "… is working…". The agent is a user of kind `agent` driven over the HTTP API;
// alice (light theme) and bob (dark) watch in headless Chromium. Tests of routes this
// server may not have yet (cancel, receipts) are skipped, saying so, when it answers
// 404 "no such route" or 405 for them.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { ChorusServer } from './server.js';
import { CHROMIUM, connected, contrasts, devToken, message, person, send, sidebarItem, type Person } from './helpers.js';

let server: ChorusServer;
let browser: Browser;
let alice: Person;
let bob: Person;
let aliceToken: string;
let helperToken: string;
let channel: number;

/** The agent's API (a JSON body, or the failure's status and body). */
async function asHelper<T>(method: string, path: string, body?: unknown): Promise<T> {
  return server.api<T>(method, path, helperToken, body);
}

/** The reason to skip when the server has no `route` (probed with a message that does
 * not exist: a server with the route answers 404 `not_found` for the message). */
async function missingRoute(route: 'cancel' | 'receipts'): Promise<string | undefined> {
  const res = await fetch(`${server.url}/api/v1/messages/999999999/${route}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${aliceToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(route === 'receipts' ? { state: 'working' } : {}),
  });
  const body = await res.text();
  if (res.status === 405 || (res.status === 404 && body.includes('no such route'))) {
    return `this server has no POST /api/v1/messages/{id}/${route} (HTTP ${res.status}): turns and receipts are not in this build`;
  }
  return undefined;
}

async function skipWithout(t: TestContext, route: 'cancel' | 'receipts'): Promise<boolean> {
  const reason = await missingRoute(route);
  if (reason) t.skip(reason);
  return reason !== undefined;
}

async function openAgents(page: Page): Promise<void> {
  await sidebarItem(page, 'agents').click();
  await page.getByRole('heading', { name: '#agents', exact: true }).waitFor();
}

/** The message with this id, on `page`. */
const byId = (page: Page, id: number): Locator => page.locator(`.conversation .messages li.msg[data-message-id="${id}"]`);

describe('agents in a real browser', () => {
  before(async () => {
    server = await ChorusServer.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
    alice = await person(browser, server, 'alice');
    bob = await person(browser, server, 'bob', true);
    aliceToken = (await devToken(server, 'alice')).token;
    const bobId = (await devToken(server, 'bob')).id;
    // The agent: made by the administrator, a member of the dev workspace, and of
    // #agents, which alice creates (so she owns it and may stop its agents).
    const admin = readFileSync(join(server.dataDir, 'admin.token'), 'utf8').trim();
    const helper = await server.api<{ token: string; user: { id: number } }>('POST', '/api/v1/users', admin, { name: 'helper', kind: 'agent' });
    helperToken = helper.token;
    const [ws] = await server.api<{ id: number }[]>('GET', '/api/v1/workspaces', aliceToken);
    await server.api('POST', `/api/v1/workspaces/${ws!.id}/members`, admin, { user_id: helper.user.id, role: 'member' });
    const created = await server.api<{ id: number }>('POST', `/api/v1/workspaces/${ws!.id}/channels`, aliceToken, {
      name: 'agents',
      member_ids: [helper.user.id, bobId],
    });
    channel = created.id;
    await openAgents(alice.page);
    await openAgents(bob.page);
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it("an agent's streaming reply renders as it is written, then whole", async () => {
    const stream = await asHelper<{ id: number; state: string }>('POST', `/api/v1/channels/${channel}/messages`, {
      text: 'Counting:',
      streaming: true,
    });
    assert.equal(stream.state, 'streaming');
    for (const p of [alice.page, bob.page]) {
      const shown = byId(p, stream.id);
      await shown.locator('.msg-text', { hasText: /^Counting:$/ }).waitFor();
      await shown.locator('.msg-head .tag.agent').waitFor();
      await shown.getByText('writing…').waitFor();
    }
    // Each append is on screen before the next is made: the text grows in steps.
    let text = 'Counting:';
    for (const word of [' one', ' two']) {
      await asHelper('POST', `/api/v1/messages/${stream.id}/append`, { text: word });
      text += word;
      for (const p of [alice.page, bob.page]) {
        await byId(p, stream.id).locator('.msg-text', { hasText: new RegExp(`^${text}$`) }).waitFor();
      }
      assert.equal(await byId(alice.page, stream.id).getAttribute('data-state'), 'streaming', 'still streaming in between');
      assert.equal(await byId(alice.page, stream.id).getAttribute('aria-busy'), 'true');
    }
    // What is shown while streaming keeps WCAG AA contrast, in both themes.
    const failures: string[] = [];
    for (const p of [alice.page, bob.page]) {
      for (const selector of ['.conversation .msg.streaming .writing', '.conversation .msg.streaming .stop']) {
        const found = await contrasts(p, selector);
        if (found.length === 0) failures.push(`nothing matches ${selector}`);
        for (const c of found) if (c.ratio < 4.5) failures.push(`${selector} "${c.text}": ${c.ratio}:1 (${c.fg} on ${c.bg})`);
      }
    }
    assert.deepEqual(failures, []);

    await asHelper('POST', `/api/v1/messages/${stream.id}/complete`, { text: 'Counting: one two three.' });
    for (const p of [alice.page, bob.page]) {
      const shown = byId(p, stream.id);
      await shown.and(p.locator('[data-state="complete"]')).waitFor();
      await shown.locator('.msg-text', { hasText: /^Counting: one two three\.$/ }).waitFor();
      assert.equal(await shown.getByText('writing…').count(), 0);
      assert.equal(await shown.getByRole('button', { name: /Stop/ }).count(), 0);
    }
  });

  it('Stop, from the keyboard, cancels the reply', async (t) => {
    if (await skipWithout(t, 'cancel')) return;
    const page = alice.page;
    await send(page, '@helper write me a long story');
    await message(page, 'write me a long story').waitFor();
    const stream = await asHelper<{ id: number }>('POST', `/api/v1/channels/${channel}/messages`, {
      text: 'Once upon a time',
      streaming: true,
    });
    const shown = byId(page, stream.id);
    const stop = shown.getByRole('button', { name: "Stop helper's reply" });
    await stop.waitFor();
    const cancelled = page.waitForResponse((r) => r.url().endsWith(`/api/v1/messages/${stream.id}/cancel`) && r.request().method() === 'POST');
    await stop.focus();
    await page.keyboard.press('Enter');
    assert.equal((await cancelled).status(), 200);
    for (const p of [alice.page, bob.page]) {
      const there = byId(p, stream.id);
      await there.and(p.locator('[data-state="aborted"]')).waitFor();
      await there.getByText('(stopped)').waitFor();
      await there.locator('.msg-text', { hasText: /^Once upon a time$/ }).waitFor();
      assert.equal(await there.getByRole('button', { name: /Stop/ }).count(), 0);
    }
    // The agent's stream is over: its next append is refused.
    await assert.rejects(asHelper('POST', `/api/v1/messages/${stream.id}/append`, { text: ' more' }), /409/);
  });

  it('receipts: "helper is working…" on the message that woke it, until done', async (t) => {
    if (await skipWithout(t, 'receipts')) return;
    const page = alice.page;
    await send(page, '@helper are you there?');
    const asked = message(page, 'are you there?');
    await asked.waitFor();
    const id = Number(await asked.getAttribute('data-message-id'));
    await asHelper('POST', `/api/v1/messages/${id}/receipts`, { state: 'working' });
    for (const p of [alice.page, bob.page]) await byId(p, id).getByRole('status').filter({ hasText: 'helper is working…' }).waitFor();
    const found = [...(await contrasts(alice.page, '.conversation .working')), ...(await contrasts(bob.page, '.conversation .working'))];
    assert.ok(found.length >= 2);
    for (const c of found) assert.ok(c.ratio >= 4.5, `"${c.text}": ${c.ratio}:1 (${c.fg} on ${c.bg})`);
    await asHelper('POST', `/api/v1/messages/${id}/receipts`, { state: 'done' });
    for (const p of [alice.page, bob.page]) await byId(p, id).getByText('helper is working…').waitFor({ state: 'detached' });
  });

  it('the loop-guard notice shows while agents are paused, and goes when a person writes', async () => {
    const notice = (p: Page) => p.locator('.loop-guard');
    assert.equal(await notice(alice.page).count(), 0);
    // Agent messages with no person's in between, up to the limit (20 by default;
    // earlier tests may have left a few): the guard holds the channel.
    let last = 0;
    for (let i = 1; i <= 20 && (await notice(alice.page).count()) === 0; i++) {
      last = (await asHelper<{ id: number }>('POST', `/api/v1/channels/${channel}/messages`, { text: `agent says ${i}` })).id;
    }
    await byId(alice.page, last).waitFor();
    for (const p of [alice.page, bob.page]) {
      await notice(p).filter({ hasText: 'Agents are paused here' }).waitFor();
      await notice(p).filter({ hasText: 'too many messages in a row' }).waitFor();
    }
    for (const p of [alice.page, bob.page]) {
      for (const c of await contrasts(p, '.loop-guard')) assert.ok(c.ratio >= 4.5, `"${c.text}": ${c.ratio}:1 (${c.fg} on ${c.bg})`);
    }
    // A reload knows too: the notice comes from the channel as loaded, not only live.
    await alice.page.reload();
    await connected(alice.page);
    await alice.page.getByRole('heading', { name: '#agents', exact: true }).waitFor();
    await notice(alice.page).filter({ hasText: 'too many messages in a row' }).waitFor();
    // A person writes: the guard lets go, and the notice goes on every screen.
    await send(bob.page, 'ok agents, that is enough');
    for (const p of [alice.page, bob.page]) {
      await message(p, 'that is enough').waitFor();
      await notice(p).waitFor({ state: 'detached' });
    }
  });
});
