// The Showcase: the team's shared preview in a frame, with its URL, commit, status and when it
// changed. Read from the API on open; live events keep it current.

import { useEffect, useState } from 'preact/hooks';
import { session } from '../api/session';
import { ago, dateTime } from '../app/format';
import { followLink } from '../app/route';
import { ErrorText } from '../app/ui';
import { frameable, isEmpty, shortCommit, statusOf, type Preview } from './current';
import { loadPreview, preview } from './store';

/** A preview on another origin keeps its own origin; one on ours must not get our cookies or storage. */
function sandboxFor(url: string): string {
  const base = 'allow-scripts allow-forms allow-popups';
  return new URL(url).origin === location.origin ? base : `${base} allow-same-origin`;
}

export function Showcase() {
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void loadPreview().then((failure) => {
      setError(failure);
      setLoaded(true);
    });
  }, []);

  const p = preview.value;
  const status = p && !isEmpty(p) ? statusOf(p.status) : null;
  return (
    <div class="screen">
      <div class="screen-head">
        <h1>Showcase</h1>
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
      {!p && !loaded && <p class="loading">Loading the preview…</p>}
      {p && <Stage preview={p} />}
      {p && !isEmpty(p) && <Details preview={p} />}
    </div>
  );
}

function Stage({ preview: p }: { preview: Preview }) {
  if (p.url && frameable(p.url)) {
    return (
      <iframe
        class="preview-frame"
        title="Team preview"
        src={p.url}
        sandbox={sandboxFor(p.url)}
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
