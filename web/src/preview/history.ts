// The preview's deploys: the history, read when the Showcase opens and again (once a burst has
// settled) on every `preview_updated` and `preview_failed` while it is open, deeper on "Load
// more"; Redeploy; and the notice of the latest failed deploy, kept whichever screen is open.

import { batch, effect, signal } from '@preact/signals';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import { realtime } from '../realtime/socket';
import {
  DEPLOY_PAGE,
  emptyDeploys,
  moreLimit,
  requesters,
  withAnswer,
  withDeployment,
  withFailure,
  type Deployment,
} from './deploys';
import { failureNotice, parseFailure, type DeployFailure, type NoticeAction } from './failure';
import { refresher } from './refresh';
import { preview } from './store';

/** Events come in bursts (a deploy announces itself starting, then live): one read after. */
const SETTLE_MS = 600;

export const deploys = signal(emptyDeploys());
/** The first read has answered (or failed). */
export const deploysLoaded = signal(false);
export const deploysError = signal<string | null>(null);
export const loadingMore = signal(false);
/** The latest failed deploy, until dismissed or a later deploy is live. */
export const failure = signal<DeployFailure | null>(null);
/** Names of members who asked for redeploys, by id. */
export const requesterNames = signal<ReadonlyMap<string, string>>(new Map());

/** How many deploys are wanted ("Load more" raises it). */
let limit = DEPLOY_PAGE;
/** Bumped by each read and on sign-out or a team change: only the latest read's answer counts. */
let reads = 0;
let shown = false;
const askedNames = new Set<string>();

async function read(): Promise<void> {
  const teamId = session.value?.team.id;
  if (!teamId) return;
  const mine = ++reads;
  const asked = limit;
  let answer: Deployment[] | null = null;
  let failed: string | null = null;
  try {
    const { data, error } = await api.GET('/api/preview/deployments', { params: { query: { limit: asked } } });
    if (data) answer = data.deployments;
    else failed = errorMessage(error);
  } catch (err) {
    failed = errorMessage(err);
  }
  if (mine !== reads || session.value?.team.id !== teamId) return;
  batch(() => {
    if (answer) deploys.value = withAnswer(deploys.value, answer, asked);
    deploysError.value = failed;
    deploysLoaded.value = true;
  });
  if (answer) void nameRequesters(answer);
}

const refresh = refresher(read, SETTLE_MS);

/** Members who asked for a redeploy are named from the team's list, read when one is not known. */
async function nameRequesters(list: Deployment[]): Promise<void> {
  const unknown = requesters(list, session.value?.user.id).filter((id) => !askedNames.has(id));
  if (!unknown.length) return;
  unknown.forEach((id) => askedNames.add(id));
  const teamId = session.value?.team.id;
  const { data } = await api.GET('/api/team').catch(() => ({ data: undefined }));
  if (data && session.value?.team.id === teamId) {
    requesterNames.value = new Map(data.members.map((m) => [m.id, m.displayName]));
  }
}

/** The Showcase is on screen (`true`, read the history now) or left (`false`). */
export function deploysShown(on: boolean): void {
  shown = on;
  if (on) refresh.now();
  else refresh.cancel();
}

/** Read the history again now (a deploy to show is not in it yet). */
export function refreshDeploys(): void {
  refresh.now();
}

/** Reads further back: the newest deploys again, more of them. */
export async function loadMoreDeploys(): Promise<void> {
  limit = moreLimit(limit);
  loadingMore.value = true;
  await read();
  loadingMore.value = false;
}

/**
 * Deploys the branch's head again (owners and admins): the new deploy is listed at once.
 * Resolves to the refusal's text, or `null` when it was queued.
 */
export async function redeploy(): Promise<string | null> {
  const teamId = session.value?.team.id;
  if (!teamId) return null;
  try {
    const { data, error } = await api.POST('/api/preview/deploy');
    if (session.value?.team.id !== teamId) return null;
    if (!data) return errorMessage(error);
    deploys.value = withDeployment(deploys.value, data.deployment);
    refresh.soon();
    return null;
  } catch (err) {
    return errorMessage(err);
  }
}

const notice = (action: NoticeAction) => {
  failure.value = failureNotice(failure.peek(), action);
};

export const dismissFailure = (): void => notice({ type: 'dismissed' });

let started = false;
/** Listens for deploys ending (once, from main). */
export function startDeploys(): void {
  if (started) return;
  started = true;
  realtime.on('preview_updated', () => {
    if (shown) refresh.soon();
  });
  realtime.on('preview_failed', (data) => {
    const failed = parseFailure(data);
    if (!failed || !session.value) return;
    batch(() => {
      notice({ type: 'failed', failure: failed });
      deploys.value = withFailure(deploys.value, failed);
    });
    if (shown) refresh.soon();
  });
  realtime.onJoined(() => {
    if (shown) refresh.now();
  });
  // A later deploy live (announced, or read) ends the notice.
  effect(() => {
    const current = preview.value;
    if (current) notice({ type: 'preview', preview: current });
  });
  let who: string | undefined;
  effect(() => {
    const s = session.value;
    const key = s ? `${s.team.id}/${s.user.id}` : undefined;
    if (key === who) return;
    who = key;
    reads++;
    limit = DEPLOY_PAGE;
    askedNames.clear();
    refresh.cancel();
    batch(() => {
      deploys.value = emptyDeploys();
      deploysLoaded.value = false;
      deploysError.value = null;
      loadingMore.value = false;
      failure.value = null;
      requesterNames.value = new Map();
    });
  });
}
