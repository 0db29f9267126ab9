// The Showcase: the team's shared preview in a frame, with its URL, commit and status.

import { session } from '../api/session';
import { dateTime } from '../app/format';
import { frameable, preview } from './store';

/** A preview on another origin keeps its own origin; one on ours must not get our cookies or storage. */
function sandboxFor(url: string): string {
  const base = 'allow-scripts allow-forms allow-popups';
  return new URL(url).origin === location.origin ? base : `${base} allow-same-origin`;
}

export function Showcase() {
  const p = preview.value;
  return (
    <div class="screen">
      <div class="screen-head">
        <h1>Showcase</h1>
        {p?.status && <span class="badge">{p.status}</span>}
      </div>
      {p && p.url && frameable(p.url) ? (
        <iframe
          class="preview-frame"
          title="Team preview"
          src={p.url}
          sandbox={sandboxFor(p.url)}
          referrerpolicy="no-referrer"
          loading="lazy"
        />
      ) : (
        p ? (
          <div class="card">
            <h2>Not on screen yet</h2>
            <p class="muted">
              The last push ({p.commit ? p.commit.slice(0, 7) : 'no commit'}) is {p.status || 'recorded'}; the preview
              shows here once it has an address.
            </p>
          </div>
        ) : (
        <div class="card">
          <h2>No preview yet</h2>
          <p class="muted">
            The team preview appears here once a push to the team's repository is deployed: point the
            repository's GitHub push webhook at{' '}
            <code>
              {location.origin}/api/webhook/push?team={session.value?.team.id}
            </code>{' '}
            and push. This screen updates
            by itself when it lands.
          </p>
        </div>
        )
      )}
      <section class="card" aria-labelledby="preview-facts">
        <h2 id="preview-facts">Details</h2>
        <dl class="facts">
          <dt>URL</dt>
          <dd>
            {p?.url ? (
              <a href={p.url} target="_blank" rel="noopener noreferrer">
                {p.url}
              </a>
            ) : (
              'none yet'
            )}
          </dd>
          <dt>Commit</dt>
          <dd>
            {p?.commit ? <code>{p.commit}</code> : 'none yet'}
          </dd>
          <dt>Status</dt>
          <dd>{p?.status || 'none yet'}</dd>
          {p?.ref && (
            <>
              <dt>Branch</dt>
              <dd>{p.ref.replace(/^refs\/heads\//, '')}</dd>
            </>
          )}
          {p?.repository && (
            <>
              <dt>Repository</dt>
              <dd>{p.repository}</dd>
            </>
          )}
          {p?.at ? (
            <>
              <dt>Updated</dt>
              <dd>{dateTime(p.at)}</dd>
            </>
          ) : null}
        </dl>
      </section>
    </div>
  );
}
