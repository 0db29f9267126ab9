// Tool approval in a real browser (issue 21): Debian's Chromium driven by playwright-core against
// a `covibe standalone` whose agent command speaks Claude Code's control protocol (the fake
// agent with `--input-format stream-json --permission-prompt-tool stdio`).
//
// The owner spawns an agent whose Bash command no policy decides: the Command Deck tells her it
// waits on her, her card shows the command with Allow, Deny and Always; she allows and the
// output goes on (the command's own output shows). Her teammate, in a second browser context,
// sees that the agent waits on her, on what, and no buttons. A second agent: "Always" for its
// Bash, and an Edit shown as a diff, denied, the agent going on. Screens at 390×844 are scanned
// with axe-core and photographed into e2e/out/.
//
//   node e2e/approvals.mjs --base http://127.0.0.1:8080     # a standalone already running so
//   node e2e/approvals.mjs --covibe ../target/debug/covibe  # starts one (its own data dir)
//                          [--static DIR] [--out e2e/out]   # DIR: a client built elsewhere
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { PHONE, arg } from './browser.mjs';
import { suite } from './suite.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const out = arg('--out', join(here, 'out'));
await mkdir(out, { recursive: true });

// Generous: the suite waits for things to happen, it never measures how fast they do.
const WAIT = 30_000;

/** The agent command of the standalone this starts: the fake agent in control mode. */
export const CONTROL_AGENT_COMMAND = `${resolve(here, '../../scripts/fake-claude')} --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio`;

/** `covibe standalone` with the control-mode fake agent in a fresh directory: its URL and a stop. */
async function startStandalone(binary, staticDir) {
  const dir = await mkdtemp(join(tmpdir(), 'covibe-approvals-'));
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('COVIBE_')) delete env[key];
  Object.assign(env, {
    COVIBE_HTTP_ADDR: '127.0.0.1:0',
    COVIBE_DATA_DIR: dir,
    COVIBE_PROJECT_DIR: dir,
    COVIBE_AGENT_COMMAND: CONTROL_AGENT_COMMAND,
    COVIBE_LIMITS__RATE_PER_IP_PER_SEC: '100000',
    COVIBE_LIMITS__BURST_PER_IP: '100000',
    COVIBE_LIMITS__LOGIN_PER_IP_PER_MIN: '100000',
    COVIBE_LIMITS__LOGIN_BURST_PER_IP: '100000',
    ...(staticDir ? { COVIBE_STATIC_DIR: resolve(staticDir) } : {}),
  });
  const child = spawn(resolve(binary), ['standalone'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`covibe standalone did not start:\n${lines.join('\n')}`)), 60_000);
    const read = (stream) =>
      createInterface({ input: stream }).on('line', (line) => {
        if (lines.length < 200) lines.push(line);
        const found = /gateway listening on (http:\/\/\S+)/.exec(line);
        if (found) {
          clearTimeout(timer);
          resolveUrl(found[1]);
        }
      });
    read(child.stdout);
    read(child.stderr);
    child.on('exit', (code) => reject(new Error(`covibe standalone exited (${code}):\n${lines.join('\n')}`)));
  });
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const binary = arg('--covibe', '');
const server = binary ? await startStandalone(binary, arg('--static', '')) : null;
const base = server ? server.url : arg('--base', 'http://127.0.0.1:8080');

const s = await suite({ out, wait: WAIT });
const { problems, member, check, scan, shoot, tab } = s;

async function noButtons(page, where) {
  for (const name of ['Allow', 'Deny', 'Always for this agent']) {
    const count = await page.getByRole('button', { name, exact: true }).count();
    if (count !== 0) throw new Error(`${where} shows ${name}`);
  }
}

/** Spawns an agent from the sheet on the Command Deck: its id. */
async function spawnAgent(page, task) {
  await tab(page, 'Command Deck');
  await page.getByRole('button', { name: 'New agent' }).click();
  const sheet = page.getByRole('dialog', { name: 'New agent' });
  await sheet.getByLabel('Task').fill(task);
  await sheet.getByRole('button', { name: 'Start agent' }).click();
  const item = page.getByRole('list', { name: 'Agents' }).locator('li[data-agent-id]', { hasText: task });
  await item.first().waitFor();
  return item.first().getAttribute('data-agent-id');
}

async function openAgent(page, agentId) {
  await tab(page, 'Command Deck');
  await page.getByRole('list', { name: 'Agents' }).locator(`li[data-agent-id="${agentId}"]`).getByRole('link').first().click();
  await page.getByRole('log', { name: 'Agent output' }).waitFor();
}

const sarah = await member('sarah');
const miguel = await member('miguel');
// Its output, 42-ran, differs from its text, so the output shows only once it has run.
const task = 'bash_cmd=echo%20$((6*7))-ran lines=2 Check the build';
const command = 'echo $((6*7))-ran';

try {
  await check('Sarah creates a team and Miguel joins it', async () => {
    await sarah.page.goto(base + '/');
    await sarah.page.getByRole('button', { name: 'Create a team' }).click();
    await sarah.page.getByLabel('Team name').fill('Rocket');
    await sarah.page.getByLabel('Your email').fill('sarah@example.com');
    await sarah.page.getByLabel('Your name').fill('Sarah');
    await sarah.page.getByRole('button', { name: 'Create team' }).click();
    await sarah.page.getByRole('navigation', { name: 'Main' }).waitFor();
    await tab(sarah.page, 'Team');
    await sarah.page.getByRole('button', { name: 'Create invite' }).click();
    const code = (await sarah.page.getByTestId('invite-code').innerText()).trim();
    await miguel.page.goto(base + '/');
    await miguel.page.getByRole('button', { name: 'Join a team' }).click();
    await miguel.page.getByLabel('Invite code').fill(code);
    await miguel.page.getByLabel('Your email').fill('miguel@example.com');
    await miguel.page.getByLabel('Your name').fill('Miguel');
    await miguel.page.getByRole('button', { name: 'Join team' }).click();
    await miguel.page.getByRole('navigation', { name: 'Main' }).waitFor();
  });

  let agentId = '';
  await check('Sarah spawns an agent whose Bash command no policy decides', async () => {
    agentId = await spawnAgent(sarah.page, task);
    await sarah.page.locator(`li[data-agent-id="${agentId}"][data-status="waiting_for_approval"]`).waitFor();
  });

  await check('the Command Deck tells Sarah the agent waits on her, and the note opens it', async () => {
    const { page } = sarah;
    const notes = page.getByRole('list', { name: 'Waiting for your approval' });
    const note = notes.locator(`li[data-agent-id="${agentId}"]`);
    await note.getByText(command).waitFor();
    await note.getByText('Check the build').waitFor();
    await page.locator(`li[data-agent-id="${agentId}"]`).getByText('Waiting for approval').first().waitFor();
    await scan(page, 'deck with a request');
    await shoot(page, 'approval-deck-390x844');
    await note.getByRole('link').click();
    await page.waitForURL(`**/agents/${agentId}`);
  });

  await check("Sarah's card shows the command and Allow, Deny, Always", async () => {
    const { page } = sarah;
    const card = page.getByTestId('approval-card');
    await card.getByRole('heading', { name: /Bash.*Run a command/ }).waitFor();
    const shown = (await card.getByLabel('Command').innerText()).replace(/^\$\s*/, '').trim();
    if (shown !== command) throw new Error(`the card shows the command as ${JSON.stringify(shown)}`);
    for (const name of ['Allow', 'Deny', 'Always for this agent']) await card.getByRole('button', { name, exact: true }).waitFor();
    await page.locator('.agent-meta').getByText('Waiting for approval').waitFor();
    // Full-size tap targets.
    for (const name of ['Allow', 'Deny', 'Always for this agent']) {
      const box = await card.getByRole('button', { name, exact: true }).boundingBox();
      if (!box || box.height < 44 || box.width < 44) throw new Error(`${name} is too small to tap: ${JSON.stringify(box)}`);
    }
    // The card, its buttons included, is on the screen without scrolling.
    const allow = await card.getByRole('button', { name: 'Always for this agent', exact: true }).boundingBox();
    if (!allow || allow.y + allow.height > PHONE.height) throw new Error('the card does not fit on the phone screen');
    await scan(page, 'agent with a request, owner');
    await shoot(page, 'approval-owner-390x844');
  });

  await check('Miguel sees the agent wait on Sarah, on what, and no buttons', async () => {
    const { page } = miguel;
    await tab(page, 'Command Deck');
    await page.locator(`li[data-agent-id="${agentId}"][data-status="waiting_for_approval"]`).waitFor();
    if (await page.getByRole('list', { name: 'Waiting for your approval' }).count()) {
      throw new Error("Miguel's deck says Sarah's agent waits on him");
    }
    await openAgent(page, agentId);
    const waiting = page.getByTestId('approval-waiting');
    await waiting.getByText('Waiting for Sarah’s approval:').waitFor();
    await waiting.getByText(command).waitFor();
    await noButtons(page, "Miguel's view of Sarah's agent");
    await scan(page, 'agent with a request, teammate');
    await shoot(page, 'approval-teammate-390x844');
  });

  await check('Sarah allows: the outcome shows, and the output goes on', async () => {
    const { page } = sarah;
    await page.getByTestId('approval-card').getByRole('button', { name: 'Allow', exact: true }).click();
    await page.getByTestId('approval-outcome').filter({ hasText: 'Allowed by you' }).waitFor();
    await page.getByTestId('approval-card').waitFor({ state: 'detached' });
    const log = page.getByRole('log', { name: 'Agent output' });
    await log.locator('.it-result', { hasText: '42-ran' }).waitFor();
    await shoot(page, 'approval-allowed-390x844');
    await page.locator('.agent-meta').getByText('Waiting for approval').waitFor({ state: 'detached' });
  });

  await check('Miguel sees the request answered and the output go on', async () => {
    const { page } = miguel;
    await page.getByTestId('approval-waiting').waitFor({ state: 'detached' });
    await page.getByRole('log', { name: 'Agent output' }).locator('.it-result', { hasText: '42-ran' }).waitFor();
  });

  let second = '';
  await check('a second agent: "Always" for its Bash, then an Edit shown as a diff', async () => {
    const { page } = sarah;
    second = await spawnAgent(page, 'edit lines=1 Rename the greeting');
    await openAgent(page, second);
    const card = page.getByTestId('approval-card');
    await card.getByRole('heading', { name: /Bash/ }).waitFor();
    await card.getByRole('button', { name: 'Always for this agent', exact: true }).click();
    await page.getByTestId('approval-outcome').filter({ hasText: 'always for this agent' }).waitFor();
    await card.getByRole('heading', { name: /Edit.*Edit a file/ }).waitFor();
    await card.getByLabel(/^Changes to /).waitFor();
    await scan(page, 'agent with an Edit request');
    await shoot(page, 'approval-edit-390x844');
  });

  await check('Sarah denies the Edit: the agent is told and goes on', async () => {
    const { page } = sarah;
    const card = page.getByTestId('approval-card').filter({ has: page.getByRole('heading', { name: /Edit/ }) });
    const requestId = await card.first().getAttribute('data-request-id');
    await card.first().getByRole('button', { name: 'Deny', exact: true }).click();
    await page.getByTestId('approval-outcome').filter({ hasText: 'Denied by you' }).waitFor();
    await page.locator(`[data-testid="approval-card"][data-request-id="${requestId}"]`).waitFor({ state: 'detached' });
    await page.getByRole('log', { name: 'Agent output' }).locator('.it-result.is-error').first().waitFor();
    // Its later Bash runs without asking (always allowed); its Edits still ask: denied too,
    // until its final result.
    const deadline = Date.now() + 2 * WAIT;
    while (!(await page.locator('.agent-meta .status-completed').count())) {
      if (Date.now() > deadline) throw new Error('the agent did not finish after its Edits were denied');
      const next = page.getByTestId('approval-card').first();
      // A card may go (answered, timed out) between seeing it and reading it: look again.
      const heading = (await next.count()) ? await next.getByRole('heading').innerText({ timeout: 1000 }).catch(() => null) : null;
      if (heading !== null) {
        if (/Bash/.test(heading)) throw new Error('a Bash use was asked again after "Always for this agent"');
        await next.getByRole('button', { name: 'Deny', exact: true }).click({ timeout: 1000 }).catch(() => {});
      }
      await page.waitForTimeout(200);
    }
    // The view followed the output to its end, the cards coming and going below it.
    await page.getByRole('log', { name: 'Agent output' }).locator('.it-final').waitFor();
    if (await page.getByRole('button', { name: 'Jump to latest ↓' }).count()) throw new Error('the view lost the end of the output');
    await shoot(page, 'approval-denied-390x844');
  });

  let third = '';
  await check('an AskUserQuestion shows its question and options', async () => {
    const { page } = sarah;
    third = await spawnAgent(page, 'ask lines=1 Pick a greeting');
    await openAgent(page, third);
    const card = page.getByTestId('approval-card');
    await card.getByRole('heading', { name: /Bash/ }).waitFor();
    await card.getByRole('button', { name: 'Allow', exact: true }).click();
    await card.getByRole('heading', { name: /AskUserQuestion/ }).waitFor();
    const options = card.getByRole('group', { name: /Which greeting should the app use\?/ });
    for (const label of ['Hello', 'Hi']) await options.getByRole('button', { name: new RegExp(`^${label}\\b`) }).waitFor();
    // "Always" makes no sense for a question, nor sending one unanswered.
    if (await card.getByRole('button', { name: 'Always for this agent', exact: true }).count()) throw new Error('a question offers Always');
    if (await card.getByRole('button', { name: 'Send answer', exact: true }).isEnabled()) throw new Error('an unanswered question can be sent');
    // The output follows to the question's tool use, the card below it.
    await page.getByRole('log', { name: 'Agent output' }).locator('.tool-name', { hasText: 'AskUserQuestion' }).waitFor();
    await page.getByRole('button', { name: 'Jump to latest ↓' }).waitFor({ state: 'detached' });
    await scan(page, 'agent with a question');
    await shoot(page, 'approval-ask-390x844');
  });

  await check('Miguel sees the agent wait for Sarah’s answer, without the choices', async () => {
    const { page } = miguel;
    await openAgent(page, third);
    const waiting = page.getByTestId('approval-waiting');
    await waiting.filter({ hasText: 'Waiting for Sarah’s answer' }).waitFor();
    if (await page.getByRole('button', { name: /^Hi\b/ }).count()) throw new Error('a teammate can pick an answer');
  });

  await check('Sarah picks an option and sends it: the agent goes on with her answer', async () => {
    const { page } = sarah;
    const card = page.getByTestId('approval-card');
    const hi = card.getByRole('button', { name: /^Hi\b/ });
    await hi.click();
    if ((await hi.getAttribute('aria-pressed')) !== 'true') throw new Error('the chosen option is not shown as chosen');
    await shoot(page, 'approval-ask-chosen-390x844');
    await card.getByRole('button', { name: 'Send answer', exact: true }).click();
    await page.getByTestId('approval-outcome').filter({ hasText: 'Answered by you' }).waitFor();
    const log = page.getByRole('log', { name: 'Agent output' });
    await log.getByText('"Which greeting should the app use?"="Hi"').first().waitFor();
    await page.locator('.agent-meta .status-completed').waitFor();
    await miguel.page.getByRole('log', { name: 'Agent output' }).getByText('"Which greeting should the app use?"="Hi"').first().waitFor();
  });
} catch (error) {
  problems.push(`step "${s.step}" failed: ${error.message}`);
  await shoot(sarah.page, 'approval-failure-sarah').catch(() => {});
  await shoot(miguel.page, 'approval-failure-miguel').catch(() => {});
}

await s.finish(`all approval checks passed; screenshots in ${out}`, async () => server?.stop());
