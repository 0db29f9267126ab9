// The Showcase: the team's shared preview in a frame, with its URL, commit, status and when it
// changed; a notice when a deploy failed; the deploy history with Redeploy. Read from the API on
// open; live events keep it current.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api/client';
import { session } from '../api/session';
import { ago, dateTime } from '../app/format';
import { followLink } from '../app/route';
import { ErrorText, useFocusAfterRender } from '../app/ui';
import { frameable, isEmpty, shortCommit, statusOf, type Preview } from './current';
import { Deploys, type Reveal } from './Deploys';
import { failureText, stillServing, type DeployFailure } from './failure';
import { deploysShown, dismissFailure, failure } from './history';
import { loadPreview, preview } from './store';

/** A preview on another origin keeps its own origin; one on ours must not get our cookies or storage. */
function sandboxFor(url: string): string {
  const base = 'allow-scripts allow-forms allow-popups';
  return new URL(url, location.href).origin === location.origin ? base : `${base} allow-same-origin`;
}

export function Showcase() {
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [reveal, setReveal] = useState<Reveal | null>(null);
  const title = useRef<HTMLHeadingElement>(null);
  const focusLater = useFocusAfterRender();
  useEffect(() => {
    void loadPreview().then((refused) => {
      setError(refused);
      setLoaded(true);
    });
    deploysShown(true);
    return () => deploysShown(false);
  }, []);

  const p = preview.value;
  const status = p && !isEmpty(p) ? statusOf(p.status) : null;
  const failed = failure.value;
  return (
    <div class="screen">
      <div class="screen-head">
        <h1 tabIndex={-1} ref={title}>
          Showcase
        </h1>
        {status && (
          <span class="badge" data-tone={status.tone}>
            {status.label}
          </span>
        )}
      </div>
      {error && p && (
        <p class="hint" role="status">
          Could not read the latest preview ({error}): showing the last one received.
        </p>
      )}
      {error && !p && <ErrorText error={error} />}
      {failed && (
        <FailureNotice
          key={failed.deploymentId}
          failure={failed}
          serving={stillServing(p)}
          onShowLog={() => setReveal((r) => ({ id: failed.deploymentId, n: (r?.n ?? 0) + 1 }))}
          onDismiss={() => {
            dismissFailure();
            focusLater(title);
          }}
        />
      )}
      {!p && !loaded && <p class="loading">Loading the preview…</p>}
      {p && <Stage preview={p} />}
      {p && !isEmpty(p) && <Details preview={p} />}
      <Deploys reveal={reveal} />
    </div>
  );
}

interface FailureNoticeProps {
  failure: DeployFailure;
  serving: boolean | null;
  onShowLog: () => void;
  onDismiss: () => void;
}

/** A deploy failed: what, why, and whether the earlier version still serves. */
function FailureNotice({ failure: f, serving, onShowLog, onDismiss }: FailureNoticeProps) {
  return (
    <section class="notice notice-bad" aria-labelledby="deploy-failed-title">
      <h2 id="deploy-failed-title">A deploy failed</h2>
      <p role="alert" data-testid="deploy-failed">
        {failureText(f, serving)}
      </p>
      <div class="vm-actions">
        <button type="button" class="btn btn-small" onClick={onShowLog}>
          Show its log
        </button>
        <button type="button" class="btn btn-small btn-ghost" onClick={onDismiss}>
          Dismiss
        </button>
      </div>
    </section>
  );
}

/**
 * A preview behind our own gateway (`/preview/TEAM/`) is for members only, and a frame cannot
 * send a bearer header: ask for the address that opens it (a capability in the path, good for
 * an hour), and again before it lapses.
 */
function usePreviewAccess(url: string): string | null {
  const ours = url.startsWith('/') && !url.startsWith('//');
  const [address, setAddress] = useState<string | null>(ours ? null : url);
  useEffect(() => {
    if (!ours) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    const ask = async () => {
      const { data } = await api.POST('/api/preview/access');
      if (stopped) return;
      setAddress(data?.url ?? null);
      const seconds = data?.expiresIn ?? 60;
      timer = setTimeout(() => void ask(), Math.max(30, seconds - 60) * 1000);
    };
    void ask();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [ours, url]);
  return ours ? address : url;
}

function Stage({ preview: p }: { preview: Preview }) {
  const address = usePreviewAccess(p.url ?? '');
  if (p.url && frameable(p.url) && address) {
    return (
      <iframe
        class="preview-frame"
        title="Team preview"
        src={address}
        sandbox={sandboxFor(address)}
        referrerpolicy="no-referrer"
        loading="lazy"
      />
    );
  }
  if (isEmpty(p)) return <NothingYet />;
  return (
    <div class="card">
      <h2>Not on screen yet</h2>
      <p class="muted">
        Commit <code>{shortCommit(p.commit) || 'unknown'}</code> is {statusOf(p.status).label}; the preview shows here
        once it has an address.
      </p>
    </div>
  );
}

function NothingYet() {
  const role = session.value?.user.role;
  const manager = role === 'owner' || role === 'admin';
  return (
    <div class="card">
      <h2>No preview yet</h2>
      <p class="muted">
        The team preview appears here once a push to the team's repository is deployed, and this screen updates by
        itself when it lands.
      </p>
      {manager ? (
        <p>
          Set up the repository, the VM it runs on and the GitHub webhook under{' '}
          <a href="/team" onClick={followLink}>
            Preview on the Team screen
          </a>
          .
        </p>
      ) : (
        <p class="muted">An owner or admin of the team sets it up on the Team screen.</p>
      )}
    </div>
  );
}

function Details({ preview: p }: { preview: Preview }) {
  const status = statusOf(p.status);
  return (
    <section class="card" aria-labelledby="preview-facts">
      <h2 id="preview-facts">Details</h2>
      <dl class="facts">
        <dt>URL</dt>
        <dd>
          {p.url ? (
            <a href={p.url} target="_blank" rel="noopener noreferrer">
              {p.url}
            </a>
          ) : (
            'none yet'
          )}
        </dd>
        <dt>Commit</dt>
        <dd>{p.commit ? <code data-testid="preview-commit">{shortCommit(p.commit)}</code> : 'none yet'}</dd>
        <dt>Status</dt>
        <dd>
          <span class="dot" data-tone={status.tone} aria-hidden="true" /> {status.label}
        </dd>
        {p.ref && (
          <>
            <dt>Branch</dt>
            <dd>{p.ref.replace(/^refs\/heads\//, '')}</dd>
          </>
        )}
        {p.repository && (
          <>
            <dt>Repository</dt>
            <dd>{p.repository}</dd>
          </>
        )}
        {p.at ? (
          <>
            <dt>Updated</dt>
            <dd>
              <time dateTime={new Date(p.at).toISOString()} title={dateTime(p.at)}>
                {ago(p.at)}
              </time>
            </dd>
          </>
        ) : null}
      </dl>
    </section>
  );
}
