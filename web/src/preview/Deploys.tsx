// The Showcase's deploy history: each deploy's commit, what set it off and who, its status, when
// it started and how long it took, opening to the end of its log; "Load more" reads further
// back. Owners and admins deploy the branch's head again from here, after a confirmation.

import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { session } from '../api/session';
import { dateTime } from '../app/format';
import { ErrorText, useFocusAfterRender, useFocusOnMount } from '../app/ui';
import { deployLine, unfinished, type DeployLine } from './deploys';
import {
  deploys,
  deploysError,
  deploysLoaded,
  loadingMore,
  loadMoreDeploys,
  redeploy,
  refreshDeploys,
  requesterNames,
} from './history';

/** A deploy's log to open and focus (the failure notice's "Show its log"); `n` makes each ask new. */
export interface Reveal {
  id: string;
  n: number;
}

const logId = (id: string) => `deploy-log-${id}`;
const toggleId = (id: string) => `deploy-toggle-${id}`;

/** The time, ticking each second while `ticking` (a deploy is running). */
function useNow(ticking: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!ticking) return;
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [ticking]);
  return ticking ? now : Date.now();
}

export function Deploys({ reveal }: { reveal: Reveal | null }) {
  const list = deploys.value;
  const [open, setOpen] = useState<ReadonlySet<string>>(() => new Set());
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  /** An element to focus once it is on screen (a log opened from the notice, the first row loaded). */
  const [focusId, setFocusId] = useState<string | null>(null);
  const heading = useRef<HTMLHeadingElement>(null);
  const redeployButton = useRef<HTMLButtonElement>(null);
  const focusLater = useFocusAfterRender();
  const revealed = useRef<{ n: number; state: 'new' | 'asked' | 'done' }>({ n: -1, state: 'done' });

  const role = session.value?.user.role;
  const manager = role === 'owner' || role === 'admin';
  const waiting = list.deployments.some(unfinished);
  const now = useNow(list.deployments.some((d) => d.status === 'running'));

  // The notice's "Show its log": open it once the deploy is listed (reading the list again when
  // it is not yet), and take the focus there.
  useEffect(() => {
    if (!reveal) return;
    if (revealed.current.n !== reveal.n) revealed.current = { n: reveal.n, state: 'new' };
    const mark = revealed.current;
    if (mark.state === 'done') return;
    if (list.deployments.some((d) => d.id === reveal.id)) {
      mark.state = 'done';
      setOpen((s) => new Set(s).add(reveal.id));
      setFocusId(logId(reveal.id));
      setStatus('');
    } else if (mark.state === 'new') {
      mark.state = 'asked';
      refreshDeploys();
    } else {
      mark.state = 'done';
      setStatus(
        list.exhausted
          ? 'That deploy is not in the history.'
          : 'That deploy is older than those listed: load more to find it.',
      );
    }
  }, [reveal, list]);

  useEffect(() => {
    if (!focusId) return;
    const target = document.getElementById(focusId);
    if (!target) return;
    target.focus();
    target.scrollIntoView({ block: 'nearest' });
    setFocusId(null);
  }, [focusId, list, open]);

  const toggle = (id: string) =>
    setOpen((s) => {
      const next = new Set(s);
      if (!next.delete(id)) next.add(id);
      return next;
    });

  const more = async () => {
    const before = list.deployments.length;
    await loadMoreDeploys();
    const first = deploys.value.deployments[before];
    if (first) setFocusId(toggleId(first.id));
  };

  const confirmed = async () => {
    setBusy(true);
    setError(null);
    setStatus('');
    const refused = await redeploy();
    setBusy(false);
    setConfirming(false);
    if (refused) {
      setError(refused);
      focusLater(waiting ? heading : redeployButton);
    } else {
      setStatus(
        "Redeploy queued: the branch's head is fetched, built and started. The current version serves until then.",
      );
      focusLater(heading);
    }
  };

  const me = session.value?.user;
  const nameOf = (id: string) => (id === me?.id ? 'you' : (requesterNames.value.get(id) ?? 'a teammate'));
  const lines = list.deployments.map((d) => deployLine(d, nameOf, now));
  const loadError = deploysError.value;
  return (
    <section class="card" aria-labelledby="deploys-title">
      <div class="card-head">
        <h2 id="deploys-title" tabIndex={-1} ref={heading}>
          Deploys
        </h2>
        {manager && (
          <button
            type="button"
            class="btn btn-small"
            ref={redeployButton}
            aria-expanded={confirming}
            aria-describedby={waiting ? 'redeploy-waiting' : undefined}
            onClick={() => setConfirming(!confirming)}
            disabled={busy || waiting}
          >
            Redeploy
          </button>
        )}
      </div>
      {manager && waiting && (
        <p class="hint" id="redeploy-waiting">
          A deploy is under way: Redeploy is back when it ends.
        </p>
      )}
      {confirming && (
        <ConfirmRedeploy
          busy={busy || waiting}
          onConfirm={() => void confirmed()}
          onCancel={() => {
            setConfirming(false);
            focusLater(redeployButton);
          }}
        />
      )}
      <ErrorText error={error} />
      <p role="status" class="status-line">
        {status}
      </p>
      {loadError && (
        <p class="alert" role="alert">
          {lines.length ? `Could not read the latest deploys (${loadError}): showing those read before.` : loadError}
        </p>
      )}
      {!deploysLoaded.value && <p class="loading">Loading the deploys…</p>}
      {deploysLoaded.value && !lines.length && !loadError && (
        <p class="muted">
          No deploys yet: each push to the preview's branch is deployed and listed here
          {manager ? ', and Redeploy deploys the head of the branch now' : ''}.
        </p>
      )}
      {lines.length > 0 && (
        <ol class="rows deploys" aria-label="Deploys">
          {lines.map((line) => (
            <DeployRow key={line.id} line={line} open={open.has(line.id)} onToggle={() => toggle(line.id)} />
          ))}
        </ol>
      )}
      {lines.length > 0 && !list.exhausted && (
        <button type="button" class="btn btn-small" onClick={() => void more()} disabled={loadingMore.value}>
          {loadingMore.value ? 'Loading…' : 'Load more'}
        </button>
      )}
    </section>
  );
}

function DeployRow({ line, open, onToggle }: { line: DeployLine; open: boolean; onToggle: () => void }) {
  const what = line.commit || 'the branch head';
  return (
    <li data-deploy-id={line.id} data-status={line.state}>
      <div class="grow">
        <div class="title">
          {line.commit ? <code>{line.commit}</code> : 'Branch head'}{' '}
          <span class="badge" data-tone={line.status.tone}>
            {line.status.label}
          </span>
        </div>
        <div class="sub">
          {line.by} ·{' '}
          <time dateTime={new Date(line.at).toISOString()} title={dateTime(line.at)}>
            {line.when}
          </time>
          {line.took && ` · ${line.took}`}
          {line.attempt && ` · ${line.attempt}`}
        </div>
      </div>
      <div class="actions">
        <button
          type="button"
          class="btn btn-small"
          id={toggleId(line.id)}
          aria-expanded={open}
          aria-controls={open ? logId(line.id) : undefined}
          onClick={onToggle}
        >
          {open ? 'Hide log' : 'Show log'}
          <span class="sr-only"> of {what}</span>
        </button>
      </div>
      {open && <DeployLog id={logId(line.id)} label={`Log of the deploy of ${what}`} text={line.log} />}
    </li>
  );
}

/** The end of a deploy's log, as text, scrolled to its last line (where a failure says why). */
function DeployLog({ id, label, text }: { id: string; label: string; text: string }) {
  const ref = useRef<HTMLPreElement>(null);
  useLayoutEffect(() => {
    const el = ref.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, []);
  return (
    <pre class="deploy-log" id={id} ref={ref} tabIndex={0} role="region" aria-label={label}>
      {text.trim() ? text : 'Nothing logged yet.'}
    </pre>
  );
}

function ConfirmRedeploy(props: { busy: boolean; onConfirm: () => void; onCancel: () => void }) {
  const yes = useFocusOnMount<HTMLButtonElement>();
  return (
    <div class="confirm">
      <p>
        Deploy the head of the preview's branch again? It is fetched afresh, built and started; the current version keeps
        serving until the new one is up.
      </p>
      <div class="vm-actions">
        <button type="button" class="btn btn-primary" ref={yes} onClick={props.onConfirm} disabled={props.busy}>
          Yes, redeploy
        </button>
        <button type="button" class="btn btn-ghost" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}
