// Credentials handed over in a link, against the real server: anyone may post
// `https://chat.example/#token=<a token>` (or a one-time `#signin=` link) in a channel.
// Clicked by someone signed in here as another account, it must not switch the account
// without their word, and a link that fails must never sign them out nor cost them
// their stored token. Every wait is for something on screen (bounded), never a sleep.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ChorusServer } from './server.js';
import { CHROMIUM, connected, devToken, person, type Person } from './helpers.js';

const TOKEN_KEY = 'chorus.token';

let server: ChorusServer;
let browser: Browser;
let victim: Person;
let victimToken: string;
let mallory: { token: string; id: number };

const storedToken = (page: Page) => page.evaluate((key) => localStorage.getItem(key), TOKEN_KEY);
const signedInAs = (page: Page) => page.locator('.topbar .me-name').textContent();
const asking = (page: Page) => page.getByRole('dialog', { name: 'Sign in as someone else?' });
/** What a click on a link to this page does: a hash change, no new page load. */
const follow = (page: Page, hash: string) => page.evaluate((h) => (location.hash = h), hash);

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

  it("a one-time #signin= link of another account asks first as well", async () => {
    const admin = readFileSync(join(server.dataDir, 'admin.token'), 'utf8').trim();
    const link = await server.api<{ url_fragment: string }>('POST', `/api/v1/users/${mallory.id}/sign-in-links`, admin, {});
    await follow(victim.page, link.url_fragment);
    await asking(victim.page).getByText('This link signs in as @mallory').waitFor();
    assert.equal(await storedToken(victim.page), victimToken);
    await asking(victim.page).getByRole('button', { name: 'Stay @victim' }).click();
    await asking(victim.page).waitFor({ state: 'detached' });
    assert.equal(await signedInAs(victim.page), 'victim');
  });

  it('switches only when the user says so', async () => {
    const page = victim.page;
    await follow(page, `#token=${encodeURIComponent(mallory.token)}`);
    await asking(page).getByRole('button', { name: 'Sign in as @mallory' }).click();
    await asking(page).waitFor({ state: 'detached' });
    await page.locator('.topbar .me-name', { hasText: 'mallory' }).waitFor();
    await connected(page);
    assert.equal(await storedToken(page), mallory.token);
  });
});
