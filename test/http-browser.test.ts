import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { chromium } from 'playwright-core';
import { boxStart } from './helpers/box.ts';
import { brokenSourceExtension, brokenSourceServe } from './helpers/broken-source.ts';
import { sleep } from './helpers/supervisor.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../test-artifacts/', import.meta.url).pathname;

/**
 * Polls `check` (functions run through $$eval) until it holds. Not page.waitForFunction: its
 * string predicates are eval'd in the page, which the status page's CSP (no 'unsafe-eval')
 * refuses as soon as the first check is false.
 */
async function pageUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

// No Chromium is a failure, not a skip: a status page nobody rendered is not known to work.
test('status page in Chromium: two outputs with live previews, then an error state when the decoder fails', async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.fail(`${CHROMIUM} is missing; install Debian's chromium (scripts/setup.sh test does)`);
    return;
  }
  const broken = await brokenSourceServe(t);
  const box = await boxStart(t, {}, [brokenSourceExtension(broken)]);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    // /healthz answers 503 while unhealthy, by design; the browser logs that as an error.
    if (m.type() === 'error' && !/status of 503/.test(m.text())) pageErrors.push(m.text());
  });
  // Every preview the page loads, hashed per output: live previews mean several different pictures.
  const previews = new Map<string, Set<string>>();
  page.on('response', async (response) => {
    const m = /\/outputs\/([^/]+)\/preview\.jpg\?at=\d+$/.exec(response.url());
    if (!m || response.status() !== 200) return;
    const body = await response.body().catch(() => undefined);
    if (!body) return;
    const name = decodeURIComponent(m[1] as string);
    const hashes = previews.get(name) ?? new Set<string>();
    hashes.add(createHash('sha256').update(body).digest('hex'));
    previews.set(name, hashes);
  });

  const response = await page.goto(`${box.url}/`);
  t.is(response?.status(), 200);
  t.is(await page.title(), 'multihead status');
  await page.waitForSelector('#health[data-state="ok"]', { timeout: 15_000 });
  await pageUntil('two preview images', async () => (await page.$$('.output img')).length === 2, 10_000);
  const names = await page.$$eval('.output', (els) => els.map((e) => e.getAttribute('data-output')));
  t.deepEqual(names, ['Virtual-1', 'Virtual-2']);
  t.deepEqual(await page.$$eval('.output', (els) => els.map((e) => e.getAttribute('data-playing'))), ['true', 'true']);
  const text = (await page.textContent('body')) ?? '';
  t.true(text.includes('pattern:testcard'), 'what plays');
  t.true(text.includes('(shared with Virtual-2)'), 'decoder sharing');
  t.regex(text, /Brokeroff/);
  t.regex(text, /Versionsapp \d+\.\d+\.\d+, addon \d+\.\d+\.\d+, Node\.js v24\./);
  // Previews refresh every second; the page reloads each newer one.
  await pageUntil(
    'both previews loaded',
    () =>
      page.$$eval('.output img', (imgs) =>
        imgs.every((i) => {
          const img = i as unknown as { complete: boolean; naturalWidth: number };
          return img.complete && img.naturalWidth > 0;
        }),
      ),
    5000,
  );
  await sleep(3500);
  for (const name of ['Virtual-1', 'Virtual-2']) {
    const seen = previews.get(name)?.size ?? 0;
    t.true(seen >= 2, `${name}: ${seen} different preview pictures loaded`);
  }
  const naturalWidth = await page.$eval('.output img', (i) => (i as unknown as { naturalWidth: number }).naturalWidth);
  t.is(naturalWidth, 320);
  mkdirSync(ARTIFACTS, { recursive: true });
  const playing = join(ARTIFACTS, 'status-page.png');
  await page.screenshot({ path: playing, fullPage: true });
  t.log(`screenshot: ${playing}`);

  // Force the decoder to fail: both outputs switch to a source that breaks mid-stream.
  const reply = await box.controller.commands.invoke('test.playBroken', {}, { transport: 'internal' });
  t.true(reply.ok, JSON.stringify(reply));
  await page.waitForSelector('#health[data-state="error"]', { timeout: 20_000 });
  await pageUntil(
    'no output playing',
    () => page.$$eval('.output', (els) => els.every((e) => e.getAttribute('data-playing') === 'false')),
    10_000,
  );
  const health = (await page.textContent('#health')) ?? '';
  t.regex(health, /^ERROR/);
  t.regex(health, /nothing playing/);
  t.regex(health, /decoder \d+ failed: http:\/\/127\.0\.0\.1:\d+\/clip\.ts: read failed/);
  const failedRow = (await page.textContent('#decoders')) ?? '';
  t.regex(failedRow, /failed: http:\/\/127\.0\.0\.1:\d+\/clip\.ts: read failed/);
  const errorShot = join(ARTIFACTS, 'status-page-error.png');
  await page.screenshot({ path: errorShot, fullPage: true });
  t.log(`screenshot: ${errorShot}`);
  t.deepEqual(pageErrors, [], 'no script errors and no failed requests on the page');
});
