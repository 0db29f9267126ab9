// A failed deploy as the Showcase tells it: the `preview_failed` event, checked, the sentence
// that says what happened, and the notice's life (shown until dismissed, replaced by a later
// failure, gone once a later deploy is live).

import { shortCommit, type Preview } from './current';

export interface DeployFailure {
  deploymentId: string;
  /** Empty for a redeploy of the branch head that failed before its commit was known. */
  commit: string;
  /** Why, in words: "the build failed". */
  reason: string;
  logTail: string;
  /** When it failed (ms since the epoch); unknown for an event without it. */
  at?: number;
}

/** A `preview_failed` payload, checked: one without a deploy to point at is refused. */
export function parseFailure(data: unknown): DeployFailure | null {
  if (!data || typeof data !== 'object') return null;
  const d = data as Record<string, unknown>;
  const text = (v: unknown) => (typeof v === 'string' ? v : '');
  if (!text(d.deploymentId)) return null;
  return {
    deploymentId: text(d.deploymentId),
    commit: text(d.commit),
    reason: text(d.reason).trim(),
    logTail: text(d.logTail),
    at: typeof d.at === 'number' ? d.at : undefined,
  };
}

/**
 * Whether an earlier version still serves after a failure, from the preview announced with it:
 * the preview service marks it failed only when no earlier deploy is live.
 */
export function stillServing(preview: Preview | null): boolean | null {
  if (!preview) return null;
  if (preview.status === 'failed' || preview.status === 'none' || !preview.url) return false;
  return true;
}

/** "The deploy of abc1234 failed: the build failed. The previous version is still serving." */
export function failureText(failure: DeployFailure, serving: boolean | null): string {
  const what = failure.commit ? shortCommit(failure.commit) : 'the branch head';
  const why = failure.reason ? `: ${failure.reason.replace(/[.\s]+$/, '')}.` : '.';
  let after = '';
  if (serving === true) after = ' The previous version is still serving.';
  else if (serving === false) after = ' No earlier version is serving.';
  return `The deploy of ${what} failed${why}${after}`;
}

export type NoticeAction =
  | { type: 'failed'; failure: DeployFailure }
  | { type: 'dismissed' }
  /** The preview changed (an event or a read). */
  | { type: 'preview'; preview: Preview };

/** The failure notice: the latest failure until dismissed, or until a later deploy is live. */
export function failureNotice(state: DeployFailure | null, action: NoticeAction): DeployFailure | null {
  switch (action.type) {
    case 'failed':
      return action.failure;
    case 'dismissed':
      return null;
    case 'preview': {
      const { preview } = action;
      // The version still serving is announced just before the failure: only a later one is news.
      const later = state?.at !== undefined && preview.at !== undefined && preview.at > state.at;
      return later && preview.status === 'live' ? null : state;
    }
  }
}
