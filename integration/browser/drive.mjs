// Drives one check page in headless Chromium (Debian's /usr/bin/chromium) with playwright-core.
// Usage: node drive.mjs URL SCREENSHOT TIMEOUT_MS
// Prints READY once the page has subscribed (the Go test then publishes), then DONE with the
// messages the page received, or FAIL with the page's error. Exits non-zero on failure.
import { chromium } from 'playwright-core';

const [url, shot, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg || 30000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let code = 0;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log('console: ' + m.text()));
  page.on('pageerror', (e) => console.log('pageerror: ' + e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.state && (window.state.ready || window.state.error), null, { timeout });
  let state = await page.evaluate(() => window.state);
  if (state.error) throw new Error(state.error);
  console.log('READY');
  await page.waitForFunction(() => window.state.done || window.state.error, null, { timeout });
  state = await page.evaluate(() => window.state);
  await page.screenshot({ path: shot, fullPage: true });
  if (state.error) throw new Error(state.error);
  console.log('DONE ' + JSON.stringify(state.received));
} catch (e) {
  console.log('FAIL ' + e.message);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
