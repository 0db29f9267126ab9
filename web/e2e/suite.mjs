// What the browser suites share: the browser, one member's context with its console watched,
// named checks, axe-core scans, screenshots, the tab bar, and the report at the end.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PHONE, launch } from './browser.mjs';

/** A suite run: screenshots go to `out`, pages wait up to `wait` ms for what they expect. */
export async function suite({ out, wait }) {
  const axeSource = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  const browser = await launch();
  const problems = [];
  const s = {
    browser,
    problems,
    /** The check under way, named in the report if it fails. */
    step: 'start',

    /** A member's browser context: one page, its console watched for CSP violations and errors. */
    async member(name, viewport = PHONE) {
      const context = await browser.newContext({ viewport, deviceScaleFactor: 1, hasTouch: viewport === PHONE });
      const page = await context.newPage();
      page.setDefaultTimeout(wait);
      page.on('console', (message) => {
        const text = message.text();
        if (/Content Security Policy|Refused to (execute|load|apply|connect)/i.test(text)) {
          problems.push(`${name}: CSP violation: ${text}`);
        }
      });
      page.on('pageerror', (error) => problems.push(`${name}: uncaught error: ${error.message}`));
      return { name, context, page };
    },

    async check(label, fn) {
      s.step = label;
      process.stdout.write(`· ${label}\n`);
      await fn();
    },

    /** axe-core on the current screen: serious and critical violations fail the run. */
    async scan(page, screen) {
      // Evaluated through the debugging protocol, which the page's CSP does not govern.
      await page.evaluate(axeSource);
      const result = await page.evaluate(async () => {
        // eslint-disable-next-line no-undef
        const r = await axe.run(document, { resultTypes: ['violations'] });
        return r.violations.map((v) => ({
          id: v.id,
          impact: v.impact,
          help: v.help,
          nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
        }));
      });
      const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
      for (const v of bad) problems.push(`axe on ${screen}: ${v.impact} ${v.id} (${v.help}) at ${v.nodes.join(', ')}`);
    },

    async shoot(page, name) {
      await page.screenshot({ path: join(out, `${name}.png`) });
    },

    async tab(page, name) {
      const nav = page.getByRole('navigation', { name: 'Main' });
      await nav.getByRole('link', { name }).click();
      await nav.getByRole('link', { name }).and(page.locator('[aria-current="page"]')).waitFor();
    },

    /** Closes the browser; any problem is reported and fails the run, else `passed` is said. */
    async finish(passed, after = async () => {}) {
      await browser.close();
      await after();
      if (problems.length) {
        console.error(`\n${problems.length} problem(s):\n- ${problems.join('\n- ')}`);
        process.exit(1);
      }
      console.log(`\n${passed}`);
    },
  };
  return s;
}
