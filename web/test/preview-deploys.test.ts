import { afterEach, describe, expect, it, vi } from 'vitest';
import { fromView, parsePreview, type Preview } from '../src/preview/current';
import {
  DEPLOY_PAGE,
  MAX_DEPLOYS,
  deployLine,
  deployStatus,
  duration,
  emptyDeploys,
  moreLimit,
  plainLog,
  requesters,
  unfinished,
  withAnswer,
  withDeployment,
  withFailure,
  type Deployment,
} from '../src/preview/deploys';
import { failureNotice, failureText, parseFailure, stillServing, type DeployFailure } from '../src/preview/failure';
import { refresher } from '../src/preview/refresh';

const MIN = 60_000;
const NOW = 1_700_000_000_000;

const deploy = (id: string, createdAt: number, extra: Partial<Deployment> = {}): Deployment => ({
  id,
  commit: `${id}bcdef1234567890`,
  trigger: 'push',
  requestedBy: 'octocat',
  status: 'live',
  attempts: 1,
  createdAt,
  startedAt: createdAt + 1_000,
  finishedAt: createdAt + 66_000,
  logTail: 'done',
  ...extra,
});

const names = (id: string) => (id === 'u-me' ? 'you' : id === 'u-sarah' ? 'Sarah' : 'a teammate');

describe('a deploy as the history shows it', () => {
  it('says what set it off, who, its status, when it started and how long it took', () => {
    const pushed = deployLine(deploy('a', NOW - 10 * MIN), names, NOW);
    expect(pushed).toMatchObject({
      id: 'a',
      commit: 'abcdef1',
      by: 'pushed by octocat',
      state: 'live',
      status: { label: 'live', tone: 'ok' },
      at: NOW - 10 * MIN + 1_000,
      when: 'started 10 min ago',
      took: 'took 1 min 5 s',
      attempt: '',
      log: 'done',
    });
    // A redeploy of the branch head names the member; its commit is unknown until it resolves.
    const redeploy = {
      trigger: 'manual',
      requestedBy: 'u-sarah',
      commit: '',
      status: 'running',
      finishedAt: 0,
      attempts: 2,
    };
    const running = deployLine(deploy('b', NOW - MIN, redeploy), names, NOW);
    expect(running).toMatchObject({
      commit: '',
      by: 'redeployed by Sarah',
      status: { label: 'deploying', tone: 'busy' },
      took: 'running for 59 s',
      attempt: 'attempt 2',
    });
    // Not started yet: when it was asked for, and no duration.
    const waiting = {
      trigger: 'manual',
      requestedBy: 'u-me',
      status: 'queued',
      startedAt: 0,
      finishedAt: 0,
      attempts: 0,
    };
    const queued = deployLine(deploy('c', NOW - 5_000, waiting), names, NOW);
    expect(queued).toMatchObject({ by: 'redeployed by you', when: 'requested just now', took: '', at: NOW - 5_000 });
    expect(deployLine(deploy('d', NOW, { requestedBy: '' }), names, NOW).by).toBe('pushed');
  });

  it('reads statuses and durations as people say them', () => {
    expect(deployStatus('failed')).toEqual({ label: 'failed', tone: 'bad' });
    expect(deployStatus('queued').tone).toBe('busy');
    expect(deployStatus('replaced')).toEqual({ label: 'replaced', tone: 'idle' });
    expect(deployStatus('paused')).toEqual({ label: 'paused', tone: 'idle' });
    expect([0, 999, 42_000, 3 * MIN, 3 * MIN + 5_000, 64 * MIN, 120 * MIN, -5].map(duration)).toEqual([
      'under 1 s',
      'under 1 s',
      '42 s',
      '3 min',
      '3 min 5 s',
      '1 h 4 min',
      '2 h',
      'under 1 s',
    ]);
    expect(unfinished(deploy('a', 0, { status: 'queued' }))).toBe(true);
    expect(unfinished(deploy('a', 0, { status: 'running' }))).toBe(true);
    expect(unfinished(deploy('a', 0, { status: 'failed' }))).toBe(false);
  });

  it('shows a log as plain text: no escape sequences, a progress bar as it ended', () => {
    const raw = [
      '\x1b[1m\x1b[32m✓ built\x1b[0m in 3s\r',
      '\x1b]0;title\x07npm 10%\r50%\r100%',
      '<script>alert(1)</script>\x07\tok',
    ].join('\n');
    expect(plainLog(raw)).toBe('✓ built in 3s\n100%\n<script>alert(1)</script>\tok');
    expect(deployLine(deploy('a', NOW, { logTail: '\x1b[31mError\x1b[0m' }), names, NOW).log).toBe('Error');
  });
});

describe('the deploys held on screen', () => {
  const page = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => deploy(`d${from - i}`, (from - i) * MIN));

  it('takes a read, says when there is no more, and raises the limit for more', () => {
    const full = withAnswer(emptyDeploys(), page(30, DEPLOY_PAGE), DEPLOY_PAGE);
    expect(full.deployments.map((d) => d.id)).toEqual(page(30, DEPLOY_PAGE).map((d) => d.id));
    expect(full.exhausted).toBe(false);
    expect(moreLimit(full.limit)).toBe(2 * DEPLOY_PAGE);
    expect(moreLimit(95)).toBe(MAX_DEPLOYS);
    const deeper = withAnswer(full, page(30, 14), 2 * DEPLOY_PAGE);
    expect(deeper).toMatchObject({ limit: 2 * DEPLOY_PAGE, exhausted: true });
    expect(deeper.deployments).toHaveLength(14);
    // The API's most: nothing further to ask for even when the answer is full.
    expect(withAnswer(full, page(200, MAX_DEPLOYS), MAX_DEPLOYS).exhausted).toBe(true);
  });

  it("keeps Redeploy's deploy that overtook a read, and drops what fell out of the read", () => {
    let list = withAnswer(emptyDeploys(), page(10, 3), 3);
    const queued = { trigger: 'manual', status: 'queued', startedAt: 0, finishedAt: 0, attempts: 0 };
    const mine = deploy('mine', 11 * MIN, queued);
    list = withDeployment(list, mine);
    expect(list.deployments.map((d) => d.id)).toEqual(['mine', 'd10', 'd9', 'd8']);
    // A read asked before Redeploy was answered: the new deploy stays on top.
    list = withAnswer(list, page(10, 3), 3);
    expect(list.deployments.map((d) => d.id)).toEqual(['mine', 'd10', 'd9', 'd8']);
    // A later read has it running; what slid past the limit is not kept behind a gap.
    const later = withAnswer(list, [{ ...mine, status: 'running', attempts: 1 }, ...page(10, 2)], 3);
    expect(later.deployments.map((d) => d.id)).toEqual(['mine', 'd10', 'd9']);
    expect(later.deployments[0]?.status).toBe('running');
    // Redeploy's answer arriving after a read that already has it running does not take it back.
    expect(withDeployment(later, mine)).toBe(later);
  });

  it('marks a failed deploy at once, and lets a read that is further along win', () => {
    const running = deploy('x', 5 * MIN, { status: 'running', finishedAt: 0, commit: '', logTail: 'cloning' });
    let list = withAnswer(emptyDeploys(), [running, deploy('w', 4 * MIN)], DEPLOY_PAGE);
    list = withFailure(list, { deploymentId: 'x', commit: 'fedcba9876', logTail: 'compiling\nexit 1' });
    expect(list.deployments[0]).toMatchObject({
      id: 'x',
      status: 'failed',
      commit: 'fedcba9876',
      logTail: 'compiling\nexit 1',
    });
    // A read asked before the failure still says running: the failure stands.
    const stale = withAnswer(list, [running, deploy('w', 4 * MIN)], DEPLOY_PAGE);
    expect(stale.deployments[0]?.status).toBe('failed');
    // The read after it is the truth (its whole log).
    const whole = 'cloning\ncompiling\nexit 1';
    const read = { ...running, status: 'failed', commit: 'fedcba9876', finishedAt: 6 * MIN, logTail: whole };
    expect(withAnswer(stale, [read], DEPLOY_PAGE).deployments[0]).toEqual(read);
    // A failure of a deploy not held waits for the read; a tried-again deploy is further along.
    expect(withFailure(list, { deploymentId: 'nope', commit: '', logTail: '' })).toBe(list);
    const retried = withAnswer(emptyDeploys(), [{ ...running, attempts: 1 }], DEPLOY_PAGE);
    const again = withAnswer(retried, [{ ...running, status: 'queued', attempts: 2 }], DEPLOY_PAGE);
    expect(again.deployments[0]?.status).toBe('queued');
  });

  it('names the members who asked for redeploys, once each, never the one signed in', () => {
    const list = [
      deploy('a', 3, { trigger: 'manual', requestedBy: 'u-sarah' }),
      deploy('b', 2, { trigger: 'manual', requestedBy: 'u-me' }),
      deploy('c', 1, { trigger: 'manual', requestedBy: 'u-sarah' }),
      deploy('d', 0, { trigger: 'push', requestedBy: 'octocat' }),
    ];
    expect(requesters(list, 'u-me')).toEqual(['u-sarah']);
  });
});

describe('the failure notice', () => {
  const failed = (extra: Record<string, unknown> = {}) => ({
    commit: 'abc1234def5678',
    deploymentId: 'dep-1',
    reason: 'the build failed',
    logTail: 'exit 1',
    at: 5_000,
    ...extra,
  });
  const live = (at: number): Preview =>
    fromView({ url: 'https://preview.example.com', commit: '1111111', status: 'live', updatedAt: at });

  it('reads the event and says what happened, and whether the last version still serves', () => {
    const f = parseFailure(failed()) as DeployFailure;
    expect(f).toEqual({
      deploymentId: 'dep-1',
      commit: 'abc1234def5678',
      reason: 'the build failed',
      logTail: 'exit 1',
      at: 5_000,
    });
    expect(failureText(f, stillServing(live(4_000)))).toBe(
      'The deploy of abc1234 failed: the build failed. The previous version is still serving.',
    );
    const first = fromView({ url: '', commit: 'abc1234', status: 'failed', updatedAt: 4_000 });
    const unhealthy = { ...f, commit: '', reason: 'the app did not answer its health check.' };
    expect(failureText(unhealthy, stillServing(first))).toBe(
      'The deploy of the branch head failed: the app did not answer its health check. No earlier version is serving.',
    );
    expect(failureText({ ...f, reason: '' }, null)).toBe('The deploy of abc1234 failed.');
    // A path on this origin serves too; nothing pushed serves nothing.
    expect(stillServing(live(1)) && stillServing({ ...live(1), url: '/preview/t1/' })).toBe(true);
    expect(stillServing(fromView({ url: '', commit: '', status: 'none', updatedAt: 0 }))).toBe(false);
    // Junk is refused, or made harmless.
    expect(parseFailure(failed({ deploymentId: 7 }))).toBeNull();
    expect(parseFailure('failed')).toBeNull();
    expect(parseFailure(failed({ reason: null, at: 'soon' }))).toMatchObject({ reason: '', at: undefined });
  });

  it('lasts until dismissed, replaced by a later failure, or a later deploy is live', () => {
    const f = parseFailure(failed()) as DeployFailure;
    let state = failureNotice(null, { type: 'failed', failure: f });
    expect(state).toBe(f);
    // The version still serving is announced with the failure, a moment before it: no news.
    expect(failureNotice(state, { type: 'preview', preview: live(5_000) })).toBe(f);
    expect(failureNotice(state, { type: 'preview', preview: live(4_900) })).toBe(f);
    // A later deploy going out is not live yet; one that is live ends the notice.
    const going = { url: 'https://preview.example.com', commit: '2222222', status: 'deploying', at: 6_000 };
    const deploying = parsePreview(going) as Preview;
    expect(failureNotice(state, { type: 'preview', preview: deploying })).toBe(f);
    expect(failureNotice(state, { type: 'preview', preview: live(7_000) })).toBeNull();
    // An event without a time cannot be placed: the notice stays.
    const untimed = parsePreview({ url: 'https://preview.example.com', commit: '3', status: 'live' }) as Preview;
    expect(failureNotice(state, { type: 'preview', preview: untimed })).toBe(f);
    const next = parseFailure(failed({ deploymentId: 'dep-2', at: 8_000 })) as DeployFailure;
    state = failureNotice(state, { type: 'failed', failure: next });
    expect(state?.deploymentId).toBe('dep-2');
    expect(failureNotice(state, { type: 'dismissed' })).toBeNull();
    expect(failureNotice(null, { type: 'preview', preview: live(9_000) })).toBeNull();
  });
});

describe('reading the history again', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('reads once after a burst, never twice at once, and again after a read when asked meanwhile', async () => {
    vi.useFakeTimers();
    let reads = 0;
    let finish: () => void = () => {};
    const refresh = refresher(
      () =>
        new Promise<void>((resolve) => {
          reads++;
          finish = resolve;
        }),
      500,
    );
    // A deploy's announcements, close together: one read once they settle.
    refresh.soon();
    await vi.advanceTimersByTimeAsync(300);
    refresh.soon();
    await vi.advanceTimersByTimeAsync(300);
    expect(reads).toBe(0);
    await vi.advanceTimersByTimeAsync(200);
    expect(reads).toBe(1);
    // Asked for while reading: not a second read at once, one more when it ends.
    refresh.now();
    refresh.now();
    expect(reads).toBe(1);
    finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(reads).toBe(2);
    finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(reads).toBe(2);
    // Cancelled: what was waiting never runs.
    refresh.soon();
    refresh.cancel();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(reads).toBe(2);
    // A read that fails does not stop the next.
    let tries = 0;
    const failing = refresher(() => {
      tries++;
      return Promise.reject(new Error('offline'));
    }, 10);
    failing.now();
    await vi.advanceTimersByTimeAsync(0);
    failing.soon();
    await vi.advanceTimersByTimeAsync(10);
    expect(tries).toBe(2);
  });
});
