// Credentials handed over in a link, against the real server: anyone may post
// `https://chat.example/#token=<a token>` (or a one-time `#signin=` link) in a channel.
// Clicked by someone signed in here as another account, it must not switch the account
// without their word, and a link that fails must never sign them out nor cost them
// their stored token. Signing out revokes a token minted for this browser (by a sign-in
// link or the `--dev` login), never one the user brought (typed, or a `#token=` link);
// a sign-in link's token left unused (the user stays) is revoked too, and so is the
// minted token of an account the user switches away from. Every wait is for
// something on screen or the server's answer (bounded), never a sleep.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ChorusServer } from './server.js';
import { channelId, CHROMIUM, confirmLink, connected, devToken, message, newPage, person, post, WAIT, type Person } from './helpers.js';

const TOKEN_KEY = 'chorus.token';
const MINTED_KEY = 'chorus.token.minted';

let server: ChorusServer;
let browser: Browser;
let victim: Person;
let victimToken: string;
let mallory: { token: string; id: number };

const storedToken = (page: Page) => page.evaluate((key) => localStorage.getItem(key), TOKEN_KEY);
const signedInAs = (page: Page) => page.locator('.topbar .me-name').textContent();
const asking = (page: Page) => page.getByRole('dialog', { name: 'Sign in as someone else?' });
/** The question a link asks when nobody is signed in: whose account it signs in as. */
const confirming = (page: Page, name: string) => page.getByRole('dialog', { name: `Sign in as @${name}?` });
/** What a click on a link to this page does: a hash change, no new page load. */
const follow = (page: Page, hash: string) => page.evaluate((h) => (location.hash = h), hash);
const adminToken = () => readFileSync(join(server.dataDir, 'admin.token'), 'utf8').trim();
/** A new one-time sign-in link of the user `id`: its fragment, `#signin=<code>`. */
const signInLink = async (id: number) =>
  (await server.api<{ url_fragment: string }>('POST', `/api/v1/users/${id}/sign-in-links`, adminToken(), {})).url_fragment;
/** The token `POST /api/v1/sign-in` gives the page (a sign-in link's code exchanged). */
const linkToken = (page: Page) =>
  page
    .waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/v1/sign-in' && r.ok())
    .then(async (r) => ((await r.json()) as { token: string }).token);
/** What the server says to `GET /api/v1/me` with `token`: 200, or 401 once it is revoked. */
const meStatus = async (token: string) =>
  (await fetch(`${server.url}/api/v1/me`, { headers: { Authorization: `Bearer ${token}` } })).status;
/** Asks the server until `token` is refused (401), for a bounded time. */
async function refused(token: string): Promise<void> {
  for (const deadline = Date.now() + WAIT; Date.now() < deadline; ) {
    if ((await meStatus(token)) === 401) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(await meStatus(token), 401, 'the token still works');
}
const signOut = async (page: Page) => {
  await page.getByRole('button', { name: 'Sign out' }).first().click();
  await page.getByLabel('Your name').waitFor();
};

describe('credentials handed over in a link', () => {
  before(async () => {
    server = await ChorusServer.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
    mallory = await devToken(server, 'mallory');
    victim = await person(browser, server, 'victim');
    victimToken = (await storedToken(victim.page))!;
    assert.ok(victimToken);
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it("a #token= link to another account's token asks first, and staying changes nothing", async () => {
    const page = victim.page;
    await follow(page, `#token=${encodeURIComponent(mallory.token)}`);
    const box = asking(page);
    await box.waitFor();
    // Both accounts named; the token left the address bar; nothing stored yet.
    await box.getByText('This link signs in as @mallory').waitFor();
    await box.getByText('You are signed in here as @victim').waitFor();
    assert.equal(new URL(page.url()).hash, '');
    assert.equal(await storedToken(page), victimToken);
    assert.equal(await signedInAs(page), 'victim');
    // Staying is what the focused button does.
    await box.getByRole('button', { name: 'Stay @victim' }).click();
    await box.waitFor({ state: 'detached' });
    assert.equal(await storedToken(page), victimToken);
    assert.equal(await signedInAs(page), 'victim');
    await connected(page);
  });

  it('opened in a new tab, it asks too; Esc stays', async () => {
    const tab = await victim.context.newPage();
    await tab.goto(`${server.url}/#token=${encodeURIComponent(mallory.token)}`);
    await asking(tab).waitFor();
    assert.equal(await storedToken(tab), victimToken);
    assert.equal(await signedInAs(tab), 'victim');
    await tab.keyboard.press('Escape');
    await asking(tab).waitFor({ state: 'detached' });
    await connected(tab);
    assert.equal(await storedToken(tab), victimToken);
    await tab.close();
  });

  it('a bogus #token= link leaves the signed-in account signed in, its token stored', async () => {
    const page = victim.page;
    await follow(page, '#token=chr_bogus');
    await page.locator('.notices .notice', { hasText: 'That sign-in link is not valid' }).waitFor();
    assert.equal(await storedToken(page), victimToken);
    assert.equal(await signedInAs(page), 'victim');
    await connected(page);

    // And on a page load: signed in as before, with the same notice.
    const tab = await victim.context.newPage();
    await tab.goto(`${server.url}/#token=chr_bogus`);
    await connected(tab);
    await tab.locator('.notices .notice', { hasText: 'That sign-in link is not valid' }).waitFor();
    assert.equal(await signedInAs(tab), 'victim');
    assert.equal(await storedToken(tab), victimToken);
    await tab.close();
  });

  it("a one-time #signin= link of another account asks first as well; staying revokes the link's token", async () => {
    const minted = linkToken(victim.page);
    await follow(victim.page, await signInLink(mallory.id));
    await asking(victim.page).getByText('This link signs in as @mallory').waitFor();
    assert.equal(await storedToken(victim.page), victimToken);
    const declined = await minted;
    assert.equal(await meStatus(declined), 200);
    await asking(victim.page).getByRole('button', { name: 'Stay @victim' }).click();
    await asking(victim.page).waitFor({ state: 'detached' });
    assert.equal(await signedInAs(victim.page), 'victim');
    // The link's token, minted for nobody now, is refused; the account signed in here
    // and mallory's own token are untouched.
    await refused(declined);
    assert.equal(await meStatus(victimToken), 200);
    assert.equal(await meStatus(mallory.token), 200);
    assert.equal(await storedToken(victim.page), victimToken);
    await connected(victim.page);
  });

  it('switches only when the user says so, and switching signs out of the account before', async () => {
    const page = victim.page;
    // The victim's token was minted for this browser (the --dev login by name).
    assert.equal(await page.evaluate((k) => localStorage.getItem(k), MINTED_KEY), victimToken);
    await follow(page, `#token=${encodeURIComponent(mallory.token)}`);
    await asking(page).getByRole('button', { name: 'Sign in as @mallory' }).click();
    await asking(page).waitFor({ state: 'detached' });
    await page.locator('.topbar .me-name', { hasText: 'mallory' }).waitFor();
    await connected(page);
    assert.equal(await storedToken(page), mallory.token);
    assert.equal(await page.evaluate((k) => localStorage.getItem(k), MINTED_KEY), null);
    // Forgotten here, the victim's minted token is revoked as signing out would; the
    // token switched to (mallory's own) is untouched.
    await refused(victimToken);
    assert.equal(await meStatus(mallory.token), 200);
  });

  it("signing out of a #token= link's account forgets the token here, and it still works", async () => {
    // Signed in as mallory by the link above: her own token, not minted here.
    const page = victim.page;
    const revokes: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'DELETE' && new URL(r.url()).pathname === '/api/v1/me/token') revokes.push(r.url());
    });
    await signOut(page);
    assert.equal(await storedToken(page), null);
    assert.deepEqual(revokes, []);
    assert.equal(await meStatus(mallory.token), 200);
  });

  it('signing out after a sign-in link revokes the token the link gave', async () => {
    const dora = await devToken(server, 'dora');
    const { context, page } = await newPage(browser, server, 'dora');
    const minted = linkToken(page);
    await page.goto(`${server.url}/${await signInLink(dora.id)}`);
    await confirmLink(page, 'dora');
    await connected(page);
    assert.equal(await signedInAs(page), 'dora');
    const token = await minted;
    assert.equal(await storedToken(page), token);
    assert.equal(await page.evaluate((k) => localStorage.getItem(k), MINTED_KEY), token);
    assert.equal(await meStatus(token), 200);
    await signOut(page);
    assert.equal(await storedToken(page), null);
    assert.equal(await page.evaluate((k) => localStorage.getItem(k), MINTED_KEY), null);
    await refused(token);
    // Her other tokens are not this session's.
    assert.equal(await meStatus(dora.token), 200);
    await context.close();
  });

  it('signing out after the --dev login by name revokes its token', async () => {
    const { context, page } = await person(browser, server, 'ezra');
    const token = (await storedToken(page))!;
    assert.ok(token);
    assert.equal(await meStatus(token), 200);
    await signOut(page);
    assert.equal(await storedToken(page), null);
    await refused(token);
    await context.close();
  });

  it('signing out after a token typed on the sign-in screen leaves the token working', async () => {
    const fay = await devToken(server, 'fay');
    const { context, page } = await newPage(browser, server, 'fay');
    const revokes: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'DELETE' && new URL(r.url()).pathname === '/api/v1/me/token') revokes.push(r.url());
    });
    await page.getByText('Sign in with a token').click();
    await page.getByLabel('API token').fill(fay.token);
    await page.getByRole('button', { name: 'Sign in with token' }).click();
    await connected(page);
    assert.equal(await signedInAs(page), 'fay');
    assert.equal(await page.evaluate((k) => localStorage.getItem(k), MINTED_KEY), null);
    await signOut(page);
    assert.equal(await storedToken(page), null);
    assert.deepEqual(revokes, []);
    assert.equal(await meStatus(fay.token), 200);
    // And it signs in again.
    await page.getByText('Sign in with a token').click();
    await page.getByLabel('API token').fill(fay.token);
    await page.getByRole('button', { name: 'Sign in with token' }).click();
    await connected(page);
    await context.close();
  });

  it('signing out when the revocation cannot reach the server still signs out here', async () => {
    const { context, page } = await person(browser, server, 'gus');
    const token = (await storedToken(page))!;
    // The revocation never answers: signed out here within the client's bounded wait.
    await page.route('**/api/v1/me/token', (route) => route.abort('connectionrefused'));
    await signOut(page);
    assert.equal(await storedToken(page), null);
    assert.equal(await meStatus(token), 200);
    await context.close();
  });

  it('a link opened with nobody signed in names its account and asks; declining signs nobody in', async () => {
    // A #token= link of mallory's own token: nothing stored until the user says so.
    const { context, page } = await newPage(browser, server, 'nobody');
    await page.goto(`${server.url}/#token=${encodeURIComponent(mallory.token)}`);
    const box = confirming(page, 'mallory');
    await box.getByText('This link signs in as @mallory').waitFor();
    assert.equal(new URL(page.url()).hash, '');
    assert.equal(await storedToken(page), null);
    // Not signing in is what Esc (and the focused button) does.
    await page.keyboard.press('Escape');
    await box.waitFor({ state: 'detached' });
    await page.getByLabel('Your name').waitFor();
    assert.equal(await storedToken(page), null);
    assert.equal(await page.locator('.topbar').count(), 0);
    assert.equal(await meStatus(mallory.token), 200);

    // A one-time link of hers asks too; declined, the token it gave is revoked.
    const minted = linkToken(page);
    await follow(page, await signInLink(mallory.id));
    await confirming(page, 'mallory').getByRole('button', { name: 'Don’t sign in' }).click();
    await confirming(page, 'mallory').waitFor({ state: 'detached' });
    await refused(await minted);
    assert.equal(await storedToken(page), null);
    assert.equal(await meStatus(mallory.token), 200);

    // Said yes to, the link signs in.
    await follow(page, `#token=${encodeURIComponent(mallory.token)}`);
    await confirmLink(page, 'mallory');
    await connected(page);
    assert.equal(await signedInAs(page), 'mallory');
    assert.equal(await storedToken(page), mallory.token);
    await context.close();
  });

  it('signing out removes the drafts and messages not sent that the user left here', async () => {
    const { context, page } = await person(browser, server, 'hana');
    const kept = () =>
      page.evaluate(() => Object.keys(localStorage).filter((k) => /^chorus\.(drafts|outbox|thread-mentions)\./.test(k)));
    // A message the server cannot be reached for waits in the outbox; a draft is typed.
    await page.route('**/api/v1/channels/*/messages', (route) =>
      route.request().method() === 'POST' ? route.abort('connectionrefused') : route.continue(),
    );
    await page.locator('#composer-input').fill('not sent');
    await page.locator('#composer-input').press('Enter');
    await page.locator('#composer-input').fill('a draft');
    await page.waitForFunction(() => Object.keys(localStorage).some((k) => k.startsWith('chorus.outbox.')));
    await page.waitForFunction(() => Object.keys(localStorage).some((k) => k.startsWith('chorus.drafts.')));
    await signOut(page);
    assert.deepEqual(await kept(), []);
    assert.equal(await storedToken(page), null);
    await context.close();
  });

  it('a session whose token is revoked elsewhere goes back to the sign-in screen, saying why', async () => {
    const { context, page } = await person(browser, server, 'ivy');
    const token = (await storedToken(page))!;
    // Signed out with this very token somewhere else (or by an administrator).
    const res = await fetch(`${server.url}/api/v1/me/token`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 204);
    await page.locator('main.signin [role="alert"]', { hasText: 'this session was ended' }).waitFor();
    await page.getByLabel('Your name').waitFor();
    assert.equal(await storedToken(page), null);
    await context.close();
  });

  it('another session of the same user signing out leaves this one signed in', async () => {
    const { context, page } = await person(browser, server, 'jay');
    const token = (await storedToken(page))!;
    // Jay signs out in another browser: every socket of his hears credentials.revoked,
    // only those of that token close.
    const elsewhere = await devToken(server, 'jay');
    const res = await fetch(`${server.url}/api/v1/me/token`, { method: 'DELETE', headers: { Authorization: `Bearer ${elsewhere.token}` } });
    assert.equal(res.status, 204);
    // What comes after the event still arrives here.
    const third = await devToken(server, 'jay');
    await post(server, third.token, await channelId(server, third.token, 'general'), 'still here after the other sign-out');
    await message(page, 'still here after the other sign-out').waitFor();
    await connected(page);
    assert.equal(await signedInAs(page), 'jay');
    assert.equal(await storedToken(page), token);
    await context.close();
  });

  it('a deactivated account is signed out, saying so', async () => {
    const kim = await devToken(server, 'kim');
    const { context, page } = await person(browser, server, 'kim');
    await server.api('POST', `/api/v1/users/${kim.id}/deactivate`, adminToken(), {});
    await page.locator('main.signin [role="alert"]', { hasText: 'your account was deactivated' }).waitFor();
    assert.equal(await storedToken(page), null);
    await context.close();
  });
});
