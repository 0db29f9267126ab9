// The preview's deploy history as data: each deploy as one line (its commit, what set it off and
// who, its status, when it started and how long it took), its log as plain text, and the list
// held on screen: the newest `limit` deploys as last read, with what was heard of since.

import type { DeploymentView } from '../api/types';
import { ago } from '../app/format';
import { shortCommit, type Tone } from './current';

export type Deployment = DeploymentView;

/** How many deploys are read at first, and how many more each "Load more" asks for. */
export const DEPLOY_PAGE = 10;
/** The most the API gives in one answer. */
export const MAX_DEPLOYS = 100;

/** How a deploy's status reads, and its colour. */
export function deployStatus(status: string): { label: string; tone: Tone } {
  switch (status) {
    case 'queued':
      return { label: 'queued', tone: 'busy' };
    case 'running':
      return { label: 'deploying', tone: 'busy' };
    case 'live':
      return { label: 'live', tone: 'ok' };
    case 'failed':
      return { label: 'failed', tone: 'bad' };
    case 'replaced':
      return { label: 'replaced', tone: 'idle' };
    default:
      return { label: status || 'unknown', tone: 'idle' };
  }
}

/** Waiting for its turn or running: a Redeploy now would only queue behind it. */
export const unfinished = (d: Deployment): boolean => d.status === 'queued' || d.status === 'running';

/** "under 1 s", "42 s", "3 min 5 s", "1 h 4 min". */
export function duration(ms: number): string {
  const s = Math.floor(Math.max(0, ms) / 1000);
  if (s < 1) return 'under 1 s';
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
}

/** Terminal escape sequences: OSC (titles, links), CSI (colours, cursor moves), and the short ones. */
const OSC = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;
const CSI = /\x1b\[[0-?]*[ -/]*[@-~]/g;
const SHORT_ESCAPE = /\x1b[@-_]/g;
/** Control characters other than tab and newline. */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;

/**
 * A log as plain text: terminal colours and other escape sequences removed, and a line that a
 * progress bar rewrote with carriage returns shown as it ended.
 */
export function plainLog(text: string): string {
  return text
    .replace(OSC, '')
    .replace(CSI, '')
    .replace(SHORT_ESCAPE, '')
    .split('\n')
    .map((line) => line.replace(/\r+$/, '').split('\r').pop() ?? '')
    .join('\n')
    .replace(CONTROL, '');
}

export interface DeployLine {
  id: string;
  /** The short commit; empty for a redeploy of the branch head not yet resolved. */
  commit: string;
  /** What set it off and who: "pushed by octocat", "redeployed by you". */
  by: string;
  /** The API's word for its status (`queued`, `running`, …), and how it reads. */
  state: string;
  status: { label: string; tone: Tone };
  /** When it started, or was asked for until it starts (ms since the epoch). */
  at: number;
  /** "started 5 min ago", "requested just now". */
  when: string;
  /** "took 1 min 5 s", "running for 12 s", or empty. */
  took: string;
  /** "attempt 2" once it was tried again, else empty. */
  attempt: string;
  /** The end of its log, as plain text. */
  log: string;
}

/**
 * One deploy as the history shows it. `nameOf` names the member who asked for a redeploy (a
 * push names the GitHub account that pushed).
 */
export function deployLine(d: Deployment, nameOf: (userId: string) => string, now: number): DeployLine {
  let by: string;
  if (d.trigger === 'push') by = d.requestedBy ? `pushed by ${d.requestedBy}` : 'pushed';
  else if (d.trigger === 'manual') by = `redeployed by ${d.requestedBy ? nameOf(d.requestedBy) : 'a teammate'}`;
  else by = d.trigger || 'deploy';
  const at = d.startedAt || d.createdAt;
  let took = '';
  if (d.startedAt && d.finishedAt) took = `took ${duration(d.finishedAt - d.startedAt)}`;
  else if (d.startedAt && d.status === 'running') took = `running for ${duration(now - d.startedAt)}`;
  return {
    id: d.id,
    commit: shortCommit(d.commit),
    by,
    state: d.status,
    status: deployStatus(d.status),
    at,
    when: `${d.startedAt ? 'started' : 'requested'} ${ago(at, now)}`,
    took,
    attempt: d.attempts > 1 ? `attempt ${d.attempts}` : '',
    log: plainLog(d.logTail),
  };
}

/** The deploys on screen: newest first, each id once. */
export interface DeployList {
  deployments: Deployment[];
  /** How many were asked for in the last read. */
  limit: number;
  /** The server has no more than those held. */
  exhausted: boolean;
}

export const emptyDeploys = (): DeployList => ({ deployments: [], limit: DEPLOY_PAGE, exhausted: false });

/** The limit "Load more" reads with, after `limit`. */
export const moreLimit = (limit: number): number => Math.min(MAX_DEPLOYS, limit + DEPLOY_PAGE);

const stage = (status: string): number =>
  status === 'queued' ? 0 : status === 'running' ? 1 : status === 'replaced' ? 3 : 2;

/** The copy further along of two of one deploy: tried more often, else further in its life; else `incoming`. */
function further(held: Deployment, incoming: Deployment): Deployment {
  if (held.attempts !== incoming.attempts) return held.attempts > incoming.attempts ? held : incoming;
  return stage(held.status) > stage(incoming.status) ? held : incoming;
}

const newestFirst = (all: Deployment[]): Deployment[] => [...all].sort((a, b) => b.createdAt - a.createdAt);

/**
 * A read of the newest `limit` deploys arrived. It is the truth for what it holds, except a copy
 * held that is further along (a failure heard of while the read was on its way); a deploy held
 * that is newer than all of it (Redeploy's answer, overtaking the read) is kept. Held deploys
 * older than the read are dropped: more may have happened in between than it holds.
 */
export function withAnswer(list: DeployList, answer: Deployment[], limit: number): DeployList {
  const held = new Map(list.deployments.map((d) => [d.id, d]));
  const inAnswer = new Set(answer.map((d) => d.id));
  const newest = answer.reduce((max, d) => Math.max(max, d.createdAt), -Infinity);
  const later = list.deployments.filter((d) => !inAnswer.has(d.id) && d.createdAt > newest);
  const read = answer.map((d) => {
    const copy = held.get(d.id);
    return copy ? further(copy, d) : d;
  });
  return {
    deployments: newestFirst([...later, ...read]),
    limit,
    exhausted: answer.length < limit || limit >= MAX_DEPLOYS,
  };
}

/** A deploy heard of outside a read (Redeploy's answer): added, or its copy updated. */
export function withDeployment(list: DeployList, d: Deployment): DeployList {
  const copy = list.deployments.find((x) => x.id === d.id);
  const next = copy ? further(copy, d) : d;
  if (next === copy) return list;
  return { ...list, deployments: newestFirst([...list.deployments.filter((x) => x.id !== d.id), next]) };
}

/** A deploy failed (a `preview_failed` event): its copy shows it, with the event's log, until the next read. */
export function withFailure(
  list: DeployList,
  failure: { deploymentId: string; commit: string; logTail: string },
): DeployList {
  const copy = list.deployments.find((d) => d.id === failure.deploymentId);
  if (!copy || copy.status === 'failed') return list;
  return withDeployment(list, {
    ...copy,
    status: 'failed',
    commit: failure.commit || copy.commit,
    logTail: failure.logTail || copy.logTail,
  });
}

/** Member ids that asked for a redeploy, other than `me`: their names are needed. */
export function requesters(list: Deployment[], me: string | undefined): string[] {
  const asked = list.filter((d) => d.trigger === 'manual' && d.requestedBy && d.requestedBy !== me);
  return [...new Set(asked.map((d) => d.requestedBy))];
}
