// End-to-end: the web UI served by the real `chorus` binary, two people in two headless
// Chromium contexts. Every wait is for something on screen (bounded by the timeouts),
// never a fixed sleep. Screenshots of the main views go to e2e-artifacts/.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ChorusServer, repoRoot } from './server.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const ARTIFACTS = join(repoRoot(), 'web', 'e2e-artifacts');
/** Upper bound of any wait: long enough for presence's 3 s grace and a restart. */
const WAIT = 20_000;

let server: ChorusServer;
let browser: Browser;
let alice: { context: BrowserContext; page: Page };
let bob: { context: BrowserContext; page: Page };

async function person(name: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (err) => console.error(`[${name}] page error:`, err));
  await page.goto(server.url);
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await connected(page);
  return { context, page };
}

const connected = (page: Page) => page.locator('.topbar .conn[data-state="open"]').waitFor();
const sidebarItem = (page: Page, label: string) =>
  page.locator('#sidebar button.chan', { has: page.locator('.chan-name', { hasText: new RegExp(`^${label}$`) }) });
const message = (page: Page, text: string | RegExp) =>
  page.locator('.conversation .messages li.msg:not(.pending)', { has: page.locator('.msg-text', { hasText: text }) });
const shot = (page: Page, name: string, fullPage = false) =>
  page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage });

/** Opens the DM of alice and bob on both pages (each test can run after a failed one). */
async function inTheDm(): Promise<void> {
  await sidebarItem(alice.page, 'bob').click();
  await sidebarItem(bob.page, 'alice').click();
  await alice.page.getByRole('heading', { name: 'bob' }).waitFor();
  await bob.page.getByRole('heading', { name: 'alice' }).waitFor();
}

async function send(page: Page, text: string, box = '#composer-input'): Promise<void> {
  await page.locator(box).fill(text);
  await page.locator(box).press('Enter');
}

describe('web UI, two people, one real server', () => {
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    server = await ChorusServer.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('serves the UI at / with the API still in front', async () => {
    const page = await fetch(`${server.url}/some/ui/path`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    const api = await fetch(`${server.url}/api/v1/nope`);
    assert.equal(api.status, 404);
    assert.equal(((await api.json()) as { error: { code: string } }).error.code, 'not_found');
  });

  it('alice and bob sign in with the dev login and land in #general', async () => {
    alice = await person('alice');
    bob = await person('bob');
    for (const { page } of [alice, bob]) {
      await page.getByRole('heading', { name: '#general' }).waitFor();
    }
    await send(alice.page, 'good morning, @bob');
    await message(bob.page, 'good morning').waitFor();
    await shot(bob.page, 'chat');
  });

  it('alice starts a DM with bob and it appears live in his sidebar', async () => {
    await alice.page.getByRole('button', { name: 'New direct message' }).click();
    await alice.page.getByRole('dialog', { name: 'New direct message' }).waitFor();
    await alice.page.locator('.person[data-user="bob"]').click();
    await alice.page.getByRole('dialog', { name: 'New direct message' }).getByRole('button', { name: 'Open' }).click();
    await alice.page.getByRole('heading', { name: 'bob' }).waitFor();
    // bob did nothing: the DM arrives over his socket (channel.joined).
    await sidebarItem(bob.page, 'alice').waitFor();
  });

  it('an unread badge appears on the DM and clears when bob opens it', async () => {
    await send(alice.page, 'hello bob');
    await message(alice.page, 'hello bob').waitFor();
    const badge = sidebarItem(bob.page, 'alice').locator('.badge');
    await badge.waitFor();
    assert.equal(await badge.getAttribute('data-unread'), '1');
    await sidebarItem(bob.page, 'alice').click();
    await message(bob.page, 'hello bob').waitFor();
    await badge.waitFor({ state: 'detached' });
  });

  it('messages go both ways', async () => {
    await send(bob.page, 'hi alice, all good?');
    await message(alice.page, 'hi alice, all good?').waitFor();
    await send(alice.page, 'yes!\nsecond line');
    await message(bob.page, 'second line').waitFor();
  });

  it('bob sees alice typing', async () => {
    const typing = bob.page.locator('.conversation .typing');
    await alice.page.locator('#composer-input').pressSequentially('I am writing', { delay: 10 });
    await bob.page.locator('.conversation .typing', { hasText: 'alice is typing…' }).waitFor();
    await shot(bob.page, 'dm');
    await alice.page.locator('#composer-input').press('Enter');
    // The message itself ends the indicator.
    await message(bob.page, 'I am writing').waitFor();
    await bob.page.waitForFunction(() => !document.querySelector('.conversation .typing')?.textContent);
    assert.equal(await typing.textContent(), '');
  });

  it('a thread reply reaches the other side', async () => {
    const root = message(alice.page, 'hello bob');
    await root.hover();
    await root.getByRole('button', { name: 'Reply in thread' }).click();
    const panel = alice.page.getByRole('complementary', { name: 'Thread' });
    await panel.waitFor();
    await send(alice.page, 'a reply in the thread', '#thread-input');
    await panel.locator('li.msg:not(.pending) .msg-text', { hasText: 'a reply in the thread' }).waitFor();
    // bob sees the reply count on the root, opens the thread and reads the reply.
    const replies = message(bob.page, 'hello bob').getByRole('button', { name: '1 reply' });
    await replies.click();
    const bobPanel = bob.page.getByRole('complementary', { name: 'Thread' });
    await bobPanel.locator('li.msg:not(.pending) .msg-text', { hasText: 'a reply in the thread' }).waitFor();
    await shot(bob.page, 'thread');
    // Esc closes the thread.
    await bob.page.keyboard.press('Escape');
    await bobPanel.waitFor({ state: 'detached' });
    await alice.page.keyboard.press('Escape');
    await panel.waitFor({ state: 'detached' });
  });

  it('a reaction shows up for both', async () => {
    const target = message(bob.page, 'hi alice, all good?');
    await target.hover();
    await target.getByRole('button', { name: 'Add reaction' }).click();
    await target.getByRole('button', { name: 'React with 🎉' }).click();
    const chip = message(alice.page, 'hi alice, all good?').locator('.reaction[data-emoji="🎉"]');
    await chip.waitFor();
    assert.match((await chip.textContent()) ?? '', /1/);
    // alice adds hers: the count goes to 2 on bob's side.
    await chip.click();
    await message(bob.page, 'hi alice, all good?')
      .locator('.reaction[data-emoji="🎉"] .count', { hasText: '2' })
      .waitFor();
  });

  it('history scrolls back to older messages; the unread badge counts what arrived', async () => {
    const { token } = await server.api<{ token: string }>('POST', '/api/v1/dev/login', undefined, { name: 'dave' });
    const [ws] = await server.api<{ id: number }[]>('GET', '/api/v1/workspaces', token);
    const channels = await server.api<{ id: number; name: string }[]>('GET', `/api/v1/workspaces/${ws!.id}/channels`, token);
    const general = channels.find((c) => c.name === 'general')!;
    for (let i = 1; i <= 70; i++) {
      await server.api('POST', `/api/v1/channels/${general.id}/messages`, token, { text: `history ${i}` });
    }
    const item = sidebarItem(bob.page, 'general');
    await item.locator('.badge[data-unread="70"]').waitFor();
    await shot(bob.page, 'unread');
    // A reload shows the same count, now from the server's read state, and forgets the
    // messages the page had received live.
    await bob.page.reload();
    await connected(bob.page);
    await item.locator('.badge[data-unread="70"]').waitFor();
    await item.click();
    await message(bob.page, /^history 70$/).waitFor();
    // The latest page only, until bob scrolls up.
    assert.equal(await message(bob.page, /^history 1$/).count(), 0);
    await bob.page.locator('.conversation .scroller').evaluate((el) => (el.scrollTop = 0));
    await message(bob.page, /^history 1$/).waitFor();
    await bob.page.locator('.conversation .start', { hasText: 'The beginning of #general' }).waitFor();
    await item.locator('.badge').waitFor({ state: 'detached' });
    // Back to the DM for the next tests.
    await sidebarItem(bob.page, 'alice').click();
    await message(bob.page, 'hello bob').waitFor();
  });

  it('presence dots change when alice closes the page and comes back', async () => {
    const dot = sidebarItem(bob.page, 'alice').locator('.dot');
    await sidebarItem(bob.page, 'alice').locator('.dot[data-presence="online"]').waitFor();
    await alice.page.close();
    // Offline after the server's presence grace (3 s).
    await sidebarItem(bob.page, 'alice').locator('.dot[data-presence="offline"]').waitFor();
    assert.equal(await dot.getAttribute('aria-label'), 'offline');
    // The same browser profile keeps the session: a new page signs straight in.
    alice.page = await alice.context.newPage();
    alice.page.setDefaultTimeout(WAIT);
    await alice.page.goto(server.url);
    await connected(alice.page);
    await sidebarItem(bob.page, 'alice').locator('.dot[data-presence="online"]').waitFor();
    await alice.page.getByRole('heading', { name: 'bob' }).waitFor();
  });

  it('after a server restart both UIs reconnect by themselves and show what was sent meanwhile', async () => {
    await inTheDm();
    await send(bob.page, 'before the restart');
    await message(alice.page, 'before the restart').waitFor();

    await server.stop();
    for (const { page } of [alice, bob]) {
      await page.locator('.topbar .conn[data-state="reconnecting"]').waitFor();
    }
    await shot(bob.page, 'reconnecting');
    await server.start();
    // Sent by alice from another client while both pages are still reconnecting (their
    // backoff is at least a few hundred ms; if one is faster, it gets them live instead).
    const { token } = await server.api<{ token: string }>('POST', '/api/v1/dev/login', undefined, { name: 'alice' });
    const dms = await server.api<{ id: number; kind: string }[]>('GET', '/api/v1/workspaces/1/channels', token);
    const dm = dms.find((c) => c.kind === 'dm');
    assert.ok(dm, 'the DM exists');
    for (const text of ['sent while you were away (1)', 'sent while you were away (2)']) {
      await server.api('POST', `/api/v1/channels/${dm.id}/messages`, token, { text });
    }
    for (const { page } of [alice, bob]) {
      await connected(page);
      await message(page, 'sent while you were away (2)').waitFor();
      // Each exactly once, in order, after what came before.
      const texts = await page.locator('.conversation .messages li.msg:not(.pending) .msg-text').allTextContents();
      const at = (t: string) => texts.findIndex((x) => x.includes(t));
      assert.equal(texts.filter((t) => t.includes('sent while you were away')).length, 2, texts.join(' | '));
      assert.ok(at('before the restart') < at('away (1)') && at('away (1)') < at('away (2)'), texts.join(' | '));
    }
    await bob.page.locator('.notice', { hasText: 'Reconnected' }).waitFor();
    await shot(bob.page, 'reconnected');
    // And the conversation goes on over the new connections.
    await send(bob.page, 'back online');
    await message(alice.page, 'back online').waitFor();
  });

  it('the operations page charts live metrics', async () => {
    await inTheDm();
    const ops = await alice.context.newPage();
    ops.setDefaultTimeout(WAIT);
    await ops.goto(`${server.url}/ops`);
    await ops.getByRole('heading', { name: 'Realtime engine' }).waitFor();
    // The stats are the admin's (or a stats:read key's): the page asks for a token.
    const adminToken = readFileSync(join(server.dataDir, 'admin.token'), 'utf8').trim();
    await ops.getByLabel('Admin token or server key').fill(adminToken);
    await ops.getByRole('button', { name: 'Show' }).click();
    // Some traffic while the page samples, one message per sample, each waited for on
    // the other side, so the charts have something to show.
    for (let i = 1; i <= 10; i++) {
      await ops.waitForFunction(
        (n) => Number(document.querySelector<HTMLElement>('.charts')?.dataset['samples'] ?? 0) >= n,
        i,
      );
      await send(i % 2 ? bob.page : alice.page, `traffic for the charts ${i}`);
      await message(i % 2 ? alice.page : bob.page, `traffic for the charts ${i}`).waitFor();
    }
    await ops.locator('.chart polyline').first().waitFor({ state: 'attached' });
    await ops.waitForFunction(() => Number(document.querySelector<HTMLElement>('.charts')?.dataset['samples']) >= 12);
    await ops.waitForFunction(() => Number(document.querySelector('.figure .figure-value')?.textContent) >= 2);
    assert.equal(await ops.locator('.chart').count(), 4);
    await shot(ops, 'ops', true);
    await ops.close();
  });

  it('works at phone width: the sidebar is a menu', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 780 }, colorScheme: 'light', isMobile: true, hasTouch: true });
    const page = await phone.newPage();
    page.setDefaultTimeout(WAIT);
    await page.goto(server.url);
    await page.getByLabel('Your name').fill('carol');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await connected(page);
    await page.getByRole('heading', { name: '#general' }).waitFor();
    assert.equal(await page.locator('#sidebar').isVisible(), false);
    await page.getByRole('button', { name: 'Channels' }).click();
    await page.locator('#sidebar').waitFor();
    await shot(page, 'phone-menu');
    await page.keyboard.press('Escape');
    await page.locator('#sidebar').waitFor({ state: 'hidden' });
    await shot(page, 'phone');
    await phone.close();
  });
});
