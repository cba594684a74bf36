// Slash commands in a real browser (issue #21): typing `/` offers the built-ins and the
// workspace's registered commands, navigable from the keyboard; a command runs instead
// of being posted, and its answer shows above the box for its author only.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ChorusServer } from './server.js';
import { CHROMIUM, devToken, message, person, sidebarItem, type Person } from './helpers.js';

let server: ChorusServer;
let browser: Browser;
let alice: Person;

const box = (page: Page) => page.locator('#composer-input');
const commands = (page: Page) => page.getByRole('listbox', { name: 'Commands' });
const answer = (page: Page) => page.getByTestId('command-answer');

describe('slash commands in a real browser', () => {
  before(async () => {
    server = await ChorusServer.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
    // alice exists (dev login) before her page loads, with a channel she created and a
    // registered command the workspace's owner (the server admin) set up for an agent.
    const aliceToken = (await devToken(server, 'alice')).token;
    const admin = readFileSync(join(server.dataDir, 'admin.token'), 'utf8').trim();
    const agent = await server.api<{ user: { id: number } }>('POST', '/api/v1/users', admin, { name: 'deployer', kind: 'agent' });
    const [ws] = await server.api<{ id: number }[]>('GET', '/api/v1/workspaces', aliceToken);
    await server.api('POST', `/api/v1/workspaces/${ws!.id}/members`, admin, { user_id: agent.user.id, role: 'member' });
    await server.api('POST', `/api/v1/workspaces/${ws!.id}/commands`, admin, {
      name: 'deploy',
      description: 'ship a build',
      target_user_id: agent.user.id,
    });
    await server.api('POST', `/api/v1/workspaces/${ws!.id}/channels`, aliceToken, { name: 'cmds' });
    alice = await person(browser, server, 'alice');
    await sidebarItem(alice.page, 'cmds').click();
    await alice.page.getByRole('heading', { name: '#cmds', exact: true }).waitFor();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('typing / offers the built-ins and registered commands, from the keyboard', async () => {
    const page = alice.page;
    await box(page).fill('');
    await box(page).pressSequentially('/');
    const list = commands(page);
    await list.waitFor();
    const names = await list.getByRole('option').locator('.suggestion-label').allTextContents();
    assert.deepEqual(names, ['/topic', '/invite', '/leave', '/me', '/policy', '/deploy']);
    await list.getByRole('option', { name: /\/deploy.*ship a build/ }).waitFor();
    // ↓ moves the choice; Tab completes it.
    assert.equal(await list.getByRole('option').nth(0).getAttribute('aria-selected'), 'true');
    await box(page).press('ArrowDown');
    await list.getByRole('option').nth(1).and(page.locator('[aria-selected="true"]')).waitFor();
    await box(page).press('ArrowUp');
    await box(page).press('ArrowUp');
    await list.getByRole('option').nth(5).and(page.locator('[aria-selected="true"]')).waitFor();
    await box(page).press('Tab');
    assert.equal(await box(page).inputValue(), '/deploy ');
    await list.waitFor({ state: 'hidden' });
    // Typing filters: `/to` leaves /topic.
    await box(page).fill('');
    await box(page).pressSequentially('/to');
    assert.deepEqual(await commands(page).getByRole('option').locator('.suggestion-label').allTextContents(), ['/topic']);
    await box(page).press('Escape');
    await commands(page).waitFor({ state: 'hidden' });
  });

  it('a command runs, is not posted, and its answer shows to its author', async () => {
    const page = alice.page;
    await box(page).fill('');
    await box(page).pressSequentially('/to');
    await box(page).press('Tab');
    await box(page).pressSequentially('Launch day');
    await box(page).press('Enter');
    await answer(page).filter({ hasText: 'topic set to "Launch day"' }).waitFor();
    assert.match((await answer(page).textContent()) ?? '', /only you can see this/);
    assert.equal(await box(page).inputValue(), '');
    assert.equal(await message(page, /\/topic/).count(), 0);

    // A registered command reaches its agent; nothing is posted.
    await box(page).fill('/deploy prod');
    await box(page).press('Enter');
    await answer(page).filter({ hasText: '/deploy sent to @deployer' }).waitFor();
    assert.equal(await message(page, /deploy prod/).count(), 0);

    // /me posts an action.
    await box(page).fill('/me waves');
    await box(page).press('Enter');
    await page.locator('.conversation .messages li.msg .msg-text.action', { hasText: 'alice waves' }).waitFor();

    // An unknown command: a clear refusal, and the text back in the box to fix.
    await box(page).fill('/nope now');
    await box(page).press('Enter');
    await answer(page).filter({ hasText: 'unknown_command' }).waitFor();
    assert.match((await answer(page).textContent()) ?? '', /\/nope is not a command/);
    assert.equal(await box(page).inputValue(), '/nope now');

    // `//` posts a leading slash.
    await box(page).fill('//topic is a word');
    await box(page).press('Enter');
    await message(page, '/topic is a word').waitFor();
  });
});
