// A team's first hour, in real browsers against the real server: an administrator
// signs in with the admin token, creates a workspace and a channel, creates two
// accounts and hands over what they sign in with (a one-time sign-in link, which works
// once and then says so, and a token); the two talk with
// markdown and mentions, complete names, edit and delete, pin, set a status, open a
// group DM, jump around with Ctrl+K, leave and rejoin. Keyboard wherever a person would
// use it. Every wait is for something on screen (bounded), never a fixed sleep.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ChorusServer, repoRoot } from './server.js';
import { CHROMIUM, confirmLink, connected, message, newPage, send, sidebarItem, type Person } from './helpers.js';

const ARTIFACTS = join(repoRoot(), 'web', 'e2e-artifacts');

let server: ChorusServer;
let browser: Browser;
let admin: Person;
let erin: Person;
let frank: Person;
let erinLink: string;
let frankToken: string;
let botToken: string;

const composer = (page: Page) => page.locator('#composer-input');
const dialog = (page: Page, name: string | RegExp) => page.getByRole('dialog', { name });
const shot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });

async function signInWithToken(page: Page, token: string): Promise<void> {
  await page.getByText('Sign in with a token').click();
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in with token' }).click();
  await connected(page);
}

async function open(page: Page, label: string, heading = `#${label}`): Promise<void> {
  await sidebarItem(page, label).click();
  await page.getByRole('heading', { name: heading, exact: true }).waitFor();
}

describe("a team's first hour", () => {
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    server = await ChorusServer.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('the administrator signs in with the admin token and creates a workspace', async () => {
    const token = readFileSync(join(server.dataDir, 'admin.token'), 'utf8').trim();
    admin = await newPage(browser, server, 'admin');
    await signInWithToken(admin.page, token);
    const page = admin.page;
    await page.getByText('You are in no workspace yet').waitFor();
    await page.getByRole('button', { name: 'Create a workspace' }).click();
    await dialog(page, 'New workspace').waitFor();
    await page.getByLabel('Name').fill('acme');
    await page.keyboard.press('Enter');
    await page.locator('.topbar .workspace', { hasText: 'acme' }).waitFor();
    await dialog(page, 'New workspace').waitFor({ state: 'detached' });
  });

  it('creates a channel with a policy and a topic, by keyboard', async () => {
    const page = admin.page;
    await page.getByRole('button', { name: 'New channel' }).focus();
    await page.keyboard.press('Enter');
    const box = dialog(page, 'New channel');
    await box.waitFor();
    // The name field has the focus.
    await page.keyboard.type('launch');
    await box.getByLabel('Who is notified of a message').selectOption('mentions');
    await box.getByLabel('Topic (optional)').fill('Shipping v1 on Friday');
    await box.getByLabel('Topic (optional)').press('Enter');
    await page.getByRole('heading', { name: '#launch', exact: true }).waitFor();
    await page.locator('.conv-head .topic', { hasText: 'Shipping v1 on Friday' }).waitFor();
    await box.waitFor({ state: 'detached' });
  });

  it('creates two accounts and gets what to hand over to each', async () => {
    const page = admin.page;
    await page.getByRole('button', { name: 'Invite people' }).first().click();
    const box = dialog(page, /Invite people to acme/);
    await box.waitFor();
    await box.getByLabel('User name').fill('erin');
    await box.getByLabel('Display name (optional)').fill('Erin Example');
    await box.getByRole('button', { name: 'Create account' }).click();
    erinLink = await box.getByLabel('Sign-in link').inputValue();
    // A one-time code, not the token itself.
    assert.match(erinLink, /\/#signin=chs_[A-Za-z0-9_-]+$/);
    assert.ok(!erinLink.includes('chr_'), erinLink);
    await shot(page, 'team-invite');
    await box.getByRole('button', { name: 'Create another' }).click();
    await box.getByLabel('User name').fill('frank');
    await box.getByRole('button', { name: 'Create account' }).click();
    frankToken = await box.getByLabel('Token').inputValue();
    assert.match(frankToken, /^chr_/);
    // And an agent, for the member list.
    await box.getByRole('button', { name: 'Create another' }).click();
    await box.getByLabel('User name').fill('helper-bot');
    await box.getByLabel('An AI agent').check();
    await box.getByRole('button', { name: 'Create account' }).click();
    botToken = await box.getByLabel('Token').inputValue();
    await page.keyboard.press('Escape');
    await box.waitFor({ state: 'detached' });
  });

  it('they sign in with what they were handed: a link, and a token', async () => {
    erin = await newPage(browser, server, 'erin');
    await erin.page.goto(erinLink);
    // Nobody is signed in there: the link says whose account it is and asks first.
    await confirmLink(erin.page, 'erin');
    await connected(erin.page);
    // The code left the address bar.
    assert.equal(new URL(erin.page.url()).hash, '');
    await erin.page.locator('.topbar .workspace', { hasText: 'acme' }).waitFor();
    await open(erin.page, 'launch');

    // The link worked once: opened again (another browser), it says so and signs nobody in.
    const again = await newPage(browser, server, 'erin-again');
    await again.page.goto(erinLink);
    await again.page.getByText('That sign-in link is not valid any more').waitFor();
    assert.equal(new URL(again.page.url()).hash, '');
    await again.page.locator('main.signin').waitFor();
    await shot(again.page, 'team-link-used');
    // Older links, which carry a token (`#token=`), still sign in.
    await again.page.goto(`${server.url}/#token=${encodeURIComponent(frankToken)}`);
    await confirmLink(again.page, 'frank');
    await connected(again.page);
    assert.equal(new URL(again.page.url()).hash, '');
    await again.context.close();

    frank = await newPage(browser, server, 'frank');
    await signInWithToken(frank.page, frankToken);
    await open(frank.page, 'launch');
  });

  it('they talk with markdown and mentions, rendered as text (no markup from people)', async () => {
    await send(erin.page, '**hello** team, @frank see `config.yml` and https://example.com/docs :tada:');
    const hello = message(frank.page, 'hello');
    await hello.waitFor();
    assert.equal(await hello.locator('strong', { hasText: 'hello' }).count(), 1);
    assert.equal(await hello.locator('.mention.me', { hasText: '@frank' }).count(), 1);
    assert.equal(await hello.locator('code', { hasText: 'config.yml' }).count(), 1);
    assert.equal(await hello.locator('a[href="https://example.com/docs"][rel~="noopener"]').count(), 1);
    assert.equal(await hello.locator('.emoji', { hasText: '🎉' }).count(), 1);

    const attack = '<img src=x onerror="window.__xss=1"> [click me](javascript:window.__xss=2) <script>window.__xss=3</script>';
    await send(erin.page, attack);
    const shown = message(frank.page, 'click me');
    await shown.waitFor();
    assert.equal(await shown.locator('img, script, a').count(), 0);
    assert.equal((await shown.locator('.msg-text').textContent())?.trim(), attack);
    assert.equal(await frank.page.evaluate(() => (window as { __xss?: number }).__xss), undefined);

    await send(erin.page, 'a code block:\n```\nfn main() {\n    println!("**not bold**");\n}\n```\n> and a quote');
    const code = message(frank.page, 'a code block');
    await code.locator('pre code', { hasText: 'println!("**not bold**");' }).waitFor();
    assert.equal(await code.locator('blockquote', { hasText: 'and a quote' }).count(), 1);
    assert.equal(await code.locator('strong').count(), 0);
    // A date divider above the day's first message.
    await frank.page.locator('.conversation li.day', { hasText: 'Today' }).first().waitFor();
  });

  it('@ completes names from the keyboard', async () => {
    const box = composer(frank.page);
    await box.click();
    await box.pressSequentially('thanks @er', { delay: 5 });
    await frank.page.getByRole('option', { name: /@erin/ }).waitFor();
    await box.press('Tab');
    assert.equal(await box.inputValue(), 'thanks @erin ');
    await box.pressSequentially('got it', { delay: 5 });
    await box.press('Enter');
    await message(erin.page, 'thanks @erin got it').locator('.mention.me').waitFor();
    // And `:` completes emoji.
    const hers = composer(erin.page);
    await hers.click();
    await hers.pressSequentially('ship it :rock', { delay: 5 });
    await erin.page.getByRole('option', { name: /🚀/ }).waitFor();
    await hers.press('Tab');
    assert.equal(await hers.inputValue(), 'ship it 🚀 ');
    await hers.press('Enter');
    await message(frank.page, 'ship it 🚀').waitFor();
  });

  it("an agent's messages are marked as an agent's", async () => {
    const channels = await server.api<{ id: number; name: string }[]>(
      'GET',
      `/api/v1/workspaces/${(await server.api<{ id: number }[]>('GET', '/api/v1/workspaces', botToken))[0]!.id}/channels`,
      botToken,
    );
    const launch = channels.find((c) => c.name === 'launch')!;
    await server.api('POST', `/api/v1/channels/${launch.id}/join`, botToken);
    await server.api('POST', `/api/v1/channels/${launch.id}/messages`, botToken, { text: 'build 42 is green' });
    const said = message(erin.page, 'build 42 is green');
    await said.locator('.msg-head .tag.agent').waitFor();
    assert.equal(await message(erin.page, 'ship it 🚀').locator('.tag.agent').count(), 0);
  });

  it('edit the last message with ↑ on an empty box, and delete one', async () => {
    const box = composer(frank.page);
    await box.press('ArrowUp');
    await frank.page.locator('.composer.editing').waitFor();
    assert.equal(await box.inputValue(), 'thanks @erin got it');
    await box.fill('thanks @erin, got it all');
    await box.press('Enter');
    const edited = message(erin.page, 'thanks @erin, got it all');
    await edited.locator('.edited').waitFor();
    // Saved: the box is empty again, out of editing.
    await frank.page.locator('.composer.editing').waitFor({ state: 'detached' });
    assert.equal(await box.inputValue(), '');

    await send(erin.page, 'oops, wrong channel');
    const oops = message(erin.page, 'oops, wrong channel');
    await oops.hover();
    await oops.getByRole('button', { name: 'Delete' }).click();
    const confirm = dialog(erin.page, 'Delete this message?');
    await confirm.getByRole('button', { name: 'Delete' }).click();
    await frank.page.locator('.conversation .msg-text', { hasText: 'This message was deleted.' }).waitFor();
    assert.equal(await message(frank.page, 'oops, wrong channel').count(), 0);
  });

  it('pin a message and see the pins', async () => {
    const hello = message(admin.page, 'hello');
    await hello.hover();
    await hello.getByRole('button', { name: 'Pin', exact: true }).click();
    await message(frank.page, 'hello').locator('.pin-mark').waitFor();
    await frank.page.getByRole('button', { name: /Pinned messages/ }).click();
    const pins = dialog(frank.page, 'Pinned in #launch');
    await pins.locator('.pin', { hasText: 'hello' }).waitFor();
    assert.match((await pins.locator('.pin').first().textContent()) ?? '', /Pinned by Administrator/);
    await frank.page.keyboard.press('Escape');
    await pins.waitFor({ state: 'detached' });
  });

  it("a message's actions by keyboard alone: pin and delete", async () => {
    const page = erin.page;
    await send(page, 'keyboard only, please');
    const target = message(page, 'keyboard only, please');
    await target.waitFor();
    // From the message box, Shift+Tab walks back into the last message's actions.
    await composer(page).focus();
    const focused = () => page.evaluate(() => document.activeElement?.getAttribute('aria-label') ?? '');
    for (let i = 0; i < 12 && (await focused()) !== 'Delete'; i++) await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(), 'Delete');
    await page.keyboard.press('Shift+Tab'); // Edit
    await page.keyboard.press('Shift+Tab'); // Pin
    assert.equal(await focused(), 'Pin');
    await page.keyboard.press('Enter');
    await message(frank.page, 'keyboard only, please').locator('.pin-mark').waitFor();
    await page.keyboard.press('Tab'); // Edit
    await page.keyboard.press('Tab'); // Delete
    await page.keyboard.press('Enter');
    const confirm = dialog(page, 'Delete this message?');
    await confirm.waitFor();
    // Cancel has the focus (the safe choice); Tab to Delete.
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Cancel');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await frank.page.locator('.conversation .msg-text', { hasText: 'This message was deleted.' }).nth(1).waitFor();
    // The focus is back in the message box.
    await page.waitForFunction(() => document.activeElement?.id === 'composer-input');
  });

  it('a status, the member list with presence and the agent badge', async () => {
    await frank.page.getByRole('button', { name: 'Your status' }).click();
    await frank.page.getByLabel('What are you up to?').fill('🏖 off on Friday');
    await frank.page.getByRole('button', { name: 'Save status' }).click();
    await frank.page.locator('.topbar .my-status', { hasText: 'off on Friday' }).waitFor();

    await erin.page.getByRole('button', { name: /^Members/ }).click();
    const members = dialog(erin.page, 'Members of acme');
    const frankRow = members.locator('.member[data-user="frank"]');
    await frankRow.locator('.status-text', { hasText: '🏖 off on Friday' }).waitFor();
    await frankRow.locator('.dot[data-presence="online"]').waitFor();
    await members.locator('.member[data-user="helper-bot"] .tag.agent').waitFor();
    await members.locator('.member[data-user="helper-bot"] .dot[data-presence="offline"]').waitFor();
    await shot(erin.page, 'team-members');
    await erin.page.keyboard.press('Escape');
  });

  it('the administrator makes frank an admin of the workspace', async () => {
    await admin.page.getByRole('button', { name: /^Members/ }).click();
    const members = dialog(admin.page, 'Members of acme');
    await members.getByLabel('Role of frank').selectOption('admin');
    // frank may now invite people.
    await frank.page.getByRole('button', { name: 'Invite people' }).waitFor();
    await admin.page.keyboard.press('Escape');
  });

  it('a group DM from the picker', async () => {
    const page = erin.page;
    await page.getByRole('button', { name: 'New direct message' }).click();
    const picker = dialog(page, 'New direct message');
    await picker.locator('.person[data-user="frank"]').click();
    await picker.locator('.person[data-user="admin"]').click();
    await picker.getByRole('button', { name: 'Start a group of 3' }).click();
    await page.getByRole('heading', { name: /^(Administrator, frank|frank, Administrator)$/ }).waitFor();
    await send(page, 'a group for the three of us');
    // The group's label names the two others.
    const item = frank.page.locator('#sidebar button.chan', { has: frank.page.locator('.chan-name', { hasText: /Administrator, Erin Example|Erin Example, Administrator/ }) });
    await item.locator('.badge[data-unread="1"]').waitFor();
    await item.click();
    await message(frank.page, 'a group for the three of us').waitFor();
  });

  it('a private channel: only the people in it see it', async () => {
    const page = admin.page;
    await page.getByRole('button', { name: 'New channel' }).click();
    const box = dialog(page, 'New channel');
    await box.getByLabel('Name').fill('leads');
    await box.getByLabel(/Private: only/).check();
    await box.getByRole('checkbox', { name: /Erin Example/ }).check();
    await box.getByRole('button', { name: 'Create channel' }).click();
    await page.getByRole('heading', { name: '#leads', exact: true }).waitFor();
    await sidebarItem(erin.page, 'leads').and(erin.page.locator('[data-kind="private"]')).waitFor();
    // frank is not in it: a message there raises nothing for him, and he does not see it.
    await send(page, 'for the leads only');
    await sidebarItem(erin.page, 'leads').locator('.badge[data-unread="1"]').waitFor();
    assert.equal(await sidebarItem(frank.page, 'leads').count(), 0);
    // Added from the channel's details, he does.
    await page.getByRole('button', { name: 'Channel details and members' }).click();
    const details = dialog(page, '#leads');
    await details.getByLabel('Add someone').selectOption({ label: 'frank' });
    await details.getByRole('button', { name: 'Add', exact: true }).click();
    await details.locator('.member', { hasText: 'frank' }).waitFor();
    await page.keyboard.press('Escape');
    await sidebarItem(frank.page, 'leads').waitFor();
    // Both read it (the next test counts what is unread).
    for (const p of [erin.page, frank.page]) {
      await open(p, 'leads');
      await message(p, 'for the leads only').waitFor();
      await sidebarItem(p, 'leads').locator('.badge').waitFor({ state: 'detached' });
    }
  });

  it('Ctrl+K jumps anywhere; the tab title counts what is unread', async () => {
    const page = erin.page;
    await page.keyboard.press('Control+k');
    const switcher = dialog(page, 'Go to a conversation');
    await switcher.waitFor();
    await page.keyboard.type('lau');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: '#launch', exact: true }).waitFor();
    await switcher.waitFor({ state: 'detached' });
    // erin is elsewhere: frank's message counts in her title, and marks where it is new.
    await page.keyboard.press('Control+k');
    await switcher.waitFor();
    await page.keyboard.type('frank');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'frank', exact: true }).waitFor();
    await open(frank.page, 'launch');
    await send(frank.page, 'news in launch');
    await page.waitForFunction(() => document.title.startsWith('(1) '));
    await open(page, 'launch');
    await page.locator('.conversation li.new-line', { hasText: 'New messages' }).waitFor();
    await page.waitForFunction(() => !document.title.startsWith('('));
  });

  it('leave a channel and join it again', async () => {
    const page = frank.page;
    await open(page, 'launch');
    await page.getByRole('button', { name: 'Channel details and members' }).click();
    const details = dialog(page, '#launch');
    await details.getByRole('button', { name: 'Leave #launch' }).click();
    await sidebarItem(page, 'launch').and(page.locator('.not-member')).waitFor();
    await open(page, 'launch');
    await sidebarItem(page, 'launch').and(page.locator('.chan:not(.not-member)')).waitFor();
    await send(page, 'back in launch');
    await message(erin.page, 'back in launch').waitFor();
    await shot(page, 'team-launch');
  });

  it('someone leaves the workspace', async () => {
    const page = frank.page;
    await page.getByRole('button', { name: /^Members/ }).click();
    await dialog(page, 'Members of acme').getByRole('button', { name: 'Leave acme' }).click();
    await page.getByText('You are in no workspace yet').waitFor();
    await erin.page.getByRole('button', { name: 'Members (3)' }).waitFor();
  });

  it('and is invited back: an existing account, picked from a list', async () => {
    const page = admin.page;
    await page.getByRole('button', { name: 'Invite people' }).first().click();
    const box = dialog(page, /Invite people to acme/);
    await box.getByLabel('Find someone').fill('fra');
    await box.getByRole('button', { name: 'Add frank' }).click();
    await box.getByText('Added: frank.').waitFor();
    // frank's page opens the workspace by itself.
    await frank.page.locator('.topbar .workspace', { hasText: 'acme' }).waitFor();
    await sidebarItem(frank.page, 'launch').waitFor();
  });
});
