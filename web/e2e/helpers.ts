// What the browser tests share: signing people in, finding things on screen, and
// measuring contrast. Every wait is for something on screen (bounded by the page's
// default timeout), never a fixed sleep.
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { ChorusServer } from './server.js';

export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
/** Upper bound of any wait: long enough for presence's 3 s grace and a restart. */
export const WAIT = 20_000;

export interface Person {
  context: BrowserContext;
  page: Page;
}

export async function newPage(browser: Browser, server: ChorusServer, name: string, dark = false): Promise<Person> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: dark ? 'dark' : 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (err) => console.error(`[${name}] page error:`, err));
  await page.goto(server.url);
  return { context, page };
}

/** A person signed in with the `--dev` login. */
export async function person(browser: Browser, server: ChorusServer, name: string, dark = false): Promise<Person> {
  const p = await newPage(browser, server, name, dark);
  await p.page.getByLabel('Your name').fill(name);
  await p.page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await connected(p.page);
  return p;
}

export const connected = (page: Page) => page.locator('.topbar .conn[data-state="open"]').waitFor();

/** Says yes to a sign-in link (`#signin=`, `#token=`) opened with nobody signed in: it
 * names the account it signs in as and asks first. */
export async function confirmLink(page: Page, name: string): Promise<void> {
  const box = page.getByRole('dialog', { name: `Sign in as @${name}?` });
  await box.getByRole('button', { name: `Sign in as @${name}` }).click();
  await box.waitFor({ state: 'detached' });
}

export const sidebarItem = (page: Page, label: string) =>
  page.locator('#sidebar button.chan', { has: page.locator('.chan-name', { hasText: new RegExp(`^${escape(label)}$`) }) });

export const message = (page: Page, text: string | RegExp) =>
  page.locator('.conversation .messages li.msg:not(.pending)', { has: page.locator('.msg-text', { hasText: text }) });

export const reply = (page: Page, text: string | RegExp) =>
  page.locator('.thread .messages li.msg:not(.pending)', { has: page.locator('.msg-text', { hasText: text }) });

export async function send(page: Page, text: string, box = '#composer-input'): Promise<void> {
  await page.locator(box).fill(text);
  await page.locator(box).press('Enter');
}

export function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The API as a `--dev` user (a fresh token per call of `login`). */
export async function devToken(server: ChorusServer, name: string): Promise<{ token: string; id: number }> {
  const { token, user } = await server.api<{ token: string; user: { id: number } }>('POST', '/api/v1/dev/login', undefined, { name });
  return { token, id: user.id };
}

export async function channelId(server: ChorusServer, token: string, name: string): Promise<number> {
  const [ws] = await server.api<{ id: number }[]>('GET', '/api/v1/workspaces', token);
  const channels = await server.api<{ id: number; name: string }[]>('GET', `/api/v1/workspaces/${ws!.id}/channels`, token);
  const found = channels.find((c) => c.name === name);
  if (!found) throw new Error(`no channel ${name}`);
  return found.id;
}

/** The one-to-one DM of the holder of `token` and `other`, opened (or created). */
export async function dmId(server: ChorusServer, token: string, other: number): Promise<number> {
  const [ws] = await server.api<{ id: number }[]>('GET', '/api/v1/workspaces', token);
  const dm = await server.api<{ id: number }>('POST', `/api/v1/workspaces/${ws!.id}/dms`, token, { user_ids: [other] });
  return dm.id;
}

export async function post(server: ChorusServer, token: string, channel: number, text: string, threadId?: number): Promise<{ id: number }> {
  return server.api('POST', `/api/v1/channels/${channel}/messages`, token, { text, ...(threadId !== undefined && { thread_id: threadId }) });
}

/** The WCAG contrast ratio of each element's text against what is behind it (its own
 * and its ancestors' backgrounds, blended; opacity included), in the page. */
export async function contrasts(page: Page, selector: string): Promise<{ text: string; ratio: number; fg: string; bg: string }[]> {
  return page.locator(selector).evaluateAll((els) => {
    type Rgba = [number, number, number, number];
    const parse = (c: string): Rgba => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return [0, 0, 0, 0];
      const parts = m[1]!.split(/[ ,/]+/).filter(Boolean).map(Number);
      return [parts[0]!, parts[1]!, parts[2]!, parts[3] ?? 1];
    };
    const over = (top: Rgba, bottom: Rgba): Rgba => {
      const a = top[3] + bottom[3] * (1 - top[3]);
      if (a === 0) return [0, 0, 0, 0];
      const mix = (i: number) => (top[i]! * top[3] + bottom[i]! * bottom[3] * (1 - top[3])) / a;
      return [mix(0), mix(1), mix(2), a];
    };
    const lum = ([r, g, b]: Rgba) => {
      const ch = (v: number) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b);
    };
    return els.map((el) => {
      const layers: Rgba[] = [];
      let opacity = 1;
      for (let node: Element | null = el; node; node = node.parentElement) {
        const style = getComputedStyle(node);
        opacity *= Number(style.opacity);
        const bg = parse(style.backgroundColor);
        if (bg[3] > 0) layers.push(bg);
        if (bg[3] >= 1) break;
      }
      let bg: Rgba = [255, 255, 255, 1];
      for (const layer of layers.reverse()) bg = over(layer, bg);
      const fgRaw = parse(getComputedStyle(el).color);
      const fg = over([fgRaw[0], fgRaw[1], fgRaw[2], fgRaw[3] * opacity], bg);
      const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      return {
        text: (el.textContent ?? '').trim().slice(0, 40),
        ratio: Math.round(((l1! + 0.05) / (l2! + 0.05)) * 100) / 100,
        fg: `rgb(${fg.slice(0, 3).map(Math.round).join(',')})`,
        bg: `rgb(${bg.slice(0, 3).map(Math.round).join(',')})`,
      };
    });
  });
}
