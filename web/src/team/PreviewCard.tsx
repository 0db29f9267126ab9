// Preview: how the team's shared preview is built and run (owners and admins only), and the
// GitHub webhook that deploys it. The webhook secret is shown once, after the first save or when
// a new one is made, in a panel that forgets it when dismissed.

import { useEffect, useReducer, useRef, useState } from 'preact/hooks';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import type { PreviewConfigEnvelope, PreviewConfigView, PutPreviewConfigAnswer } from '../api/types';
import { ago, dateTime } from '../app/format';
import { CopyButton, ErrorText, useFocusAfterRender, useFocusOnMount } from '../app/ui';
import { memberName } from './members';
import { myVms } from './myVms';
import {
  absoluteUrl,
  firstPreviewError,
  inputOf,
  previewErrors,
  putPreviewBody,
  secretPanel,
  vmChoices,
  vmLabel,
  type PreviewErrors,
  type PreviewInput,
  type ShownSecret,
} from './previewForm';
import { FieldError, TextField } from './VmFields';

export function PreviewCard() {
  const [view, setView] = useState<PreviewConfigEnvelope | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [editing, setEditing] = useState(false);
  const [rotating, setRotating] = useState(false);
  const [busy, setBusy] = useState(false);
  const [shown, dispatch] = useReducer(secretPanel, null);
  const heading = useRef<HTMLHeadingElement>(null);
  const change = useRef<HTMLButtonElement>(null);
  const rotate = useRef<HTMLButtonElement>(null);
  const focusLater = useFocusAfterRender();

  useEffect(() => {
    void (async () => {
      const { data, error: failure } = await api.GET('/api/preview/config');
      if (data) setView(data);
      else setError(errorMessage(failure));
    })();
  }, []);

  const saved = (answer: PutPreviewConfigAnswer) => {
    setView({ config: answer.config, webhookUrl: answer.webhookUrl });
    dispatch({ type: 'saved', answer });
    setEditing(false);
    setError(null);
    if (answer.webhookSecret) {
      setStatus('Saved. Now connect GitHub with the webhook secret below: it is shown only this once.');
    } else {
      setStatus(`Saved: the next push to ${answer.config.branch} deploys with these settings.`);
      focusLater(heading);
    }
  };

  const newSecret = async () => {
    setBusy(true);
    setError(null);
    setStatus('');
    const { data, error: failure } = await api.POST('/api/preview/config/webhook-secret');
    setBusy(false);
    setRotating(false);
    if (data) {
      setView((v) => v && { ...v, webhookUrl: data.webhookUrl });
      dispatch({ type: 'rotated', answer: data });
      setStatus('A new webhook secret was made: paste it into GitHub now.');
    } else {
      setError(errorMessage(failure));
      focusLater(rotate);
    }
  };

  const config = view?.config;
  const webhookUrl = view ? absoluteUrl(view.webhookUrl, location.origin) : '';
  return (
    <section class="card" aria-labelledby="preview-title">
      <div class="card-head">
        <h2 id="preview-title" tabIndex={-1} ref={heading}>
          Preview
        </h2>
        {config && <span class="badge">{config.configured ? 'configured' : 'not configured'}</span>}
      </div>
      <p class="hint">
        The team's shared preview in Showcase: each push to the branch below is built and started on a VM.
      </p>
      <ErrorText error={error} />
      <p role="status" class="status-line">
        {status}
      </p>
      {!view && !error && <p class="loading">Loading the preview settings…</p>}
      {shown && (
        <SecretPanel
          key={shown.secret}
          shown={{ ...shown, webhookUrl: absoluteUrl(shown.webhookUrl, location.origin) }}
          onDismiss={() => {
            dispatch({ type: 'dismissed' });
            setStatus('');
            focusLater(heading);
          }}
        />
      )}
      {config && !config.configured && <p class="muted">Not configured yet: nothing deploys until it is.</p>}
      {config?.configured && <CurrentConfig config={config} webhookUrl={webhookUrl} />}
      {config?.configured && !editing && (
        <div class="vm-actions">
          <button type="button" class="btn btn-small" ref={change} onClick={() => setEditing(true)}>
            Change settings
          </button>
          <button
            type="button"
            class="btn btn-small"
            ref={rotate}
            aria-expanded={rotating}
            onClick={() => setRotating(!rotating)}
            disabled={busy}
          >
            New webhook secret
          </button>
        </div>
      )}
      {rotating && !editing && (
        <ConfirmRotate
          busy={busy}
          onConfirm={() => void newSecret()}
          onCancel={() => {
            setRotating(false);
            focusLater(rotate);
          }}
        />
      )}
      {config && (!config.configured || editing) && (
        <PreviewForm
          config={config}
          onSaved={saved}
          onCancel={
            config.configured
              ? () => {
                  setEditing(false);
                  focusLater(change);
                }
              : undefined
          }
        />
      )}
    </section>
  );
}

function CurrentConfig({ config, webhookUrl }: { config: PreviewConfigView; webhookUrl: string }) {
  const by = config.updatedBy ?? '';
  const mine = by === session.value?.user.id;
  const who = mine ? 'you' : !by ? 'the saving member' : (memberName(by) ?? 'a former member');
  const whose = mine ? 'your' : `${who}'s`;
  return (
    <>
      <dl class="facts">
        <dt>Repository</dt>
        <dd>
          <code>{config.repository}</code>
        </dd>
        <dt>Branch</dt>
        <dd>
          <code>{config.branch}</code>
        </dd>
        <dt>VM</dt>
        <dd>{vmLabel(config, myVms.value, whose)}</dd>
        <dt>Work directory</dt>
        <dd>{config.workDir ? <code>{config.workDir}</code> : 'chosen by CoVibe'}</dd>
        <dt>Build</dt>
        <dd>{config.buildCommand ? <code>{config.buildCommand}</code> : 'none'}</dd>
        <dt>Start</dt>
        <dd>
          <code>{config.startCommand}</code>
        </dd>
        <dt>Port</dt>
        <dd>{config.port}</dd>
        <dt>Health check</dt>
        <dd>
          <code>{config.healthPath || '/'}</code>
        </dd>
        <dt>Saved</dt>
        <dd>
          {config.updatedAt ? (
            <time dateTime={new Date(config.updatedAt).toISOString()} title={dateTime(config.updatedAt)}>
              {ago(config.updatedAt)}
            </time>
          ) : (
            'never'
          )}{' '}
          by {who}
        </dd>
      </dl>
      <p class="label">GitHub webhook Payload URL</p>
      <div class="code-box">
        <code data-testid="webhook-url">{webhookUrl}</code>
        <CopyButton text={webhookUrl} label="Copy URL" />
      </div>
    </>
  );
}

function ConfirmRotate(props: { busy: boolean; onConfirm: () => void; onCancel: () => void }) {
  const yes = useFocusOnMount<HTMLButtonElement>();
  return (
    <div class="confirm">
      <p>
        Make a new webhook secret? The current one stops working at once: GitHub will be refused until you paste the new
        secret into the webhook's settings.
      </p>
      <div class="vm-actions">
        <button type="button" class="btn btn-danger" ref={yes} onClick={props.onConfirm} disabled={props.busy}>
          {props.busy ? 'Making…' : 'Yes, make a new secret'}
        </button>
        <button type="button" class="btn btn-ghost" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}

function SecretPanel({ shown, onDismiss }: { shown: ShownSecret; onDismiss: () => void }) {
  const title = useFocusOnMount<HTMLHeadingElement>();
  return (
    <section class="notice" aria-labelledby="webhook-secret-title">
      <h3 id="webhook-secret-title" tabIndex={-1} ref={title}>
        {shown.first ? 'Connect GitHub' : 'The new webhook secret'}
      </h3>
      <p class="warning">
        <strong>Shown only this once.</strong> Copy the secret now: CoVibe will not show it again. If it is lost, make a
        new one.
      </p>
      <p class="label">Payload URL</p>
      <div class="code-box">
        <code>{shown.webhookUrl}</code>
        <CopyButton text={shown.webhookUrl} label="Copy URL" />
      </div>
      <p class="label">Secret</p>
      <div class="code-box">
        <code data-testid="webhook-secret">{shown.secret}</code>
        <CopyButton text={shown.secret} label="Copy secret" />
      </div>
      {shown.first ? (
        <ol class="steps">
          <li>
            On GitHub, open the repository's <strong>Settings → Webhooks → Add webhook</strong>.
          </li>
          <li>
            <strong>Payload URL</strong>: the URL above.
          </li>
          <li>
            <strong>Content type</strong>: <code>application/json</code>.
          </li>
          <li>
            <strong>Secret</strong>: the secret above.
          </li>
          <li>
            <strong>Which events</strong>: Just the push event.
          </li>
          <li>
            Keep <strong>Active</strong> ticked and press <strong>Add webhook</strong>.
          </li>
        </ol>
      ) : (
        <ol class="steps">
          <li>
            On GitHub, open the repository's <strong>Settings → Webhooks</strong> and edit the webhook whose Payload URL
            is the URL above.
          </li>
          <li>
            <strong>Secret</strong>: paste the new secret (keep <strong>Content type</strong>{' '}
            <code>application/json</code> and <strong>Just the push event</strong>).
          </li>
          <li>
            Press <strong>Update webhook</strong>. Until then GitHub's deliveries are refused.
          </li>
        </ol>
      )}
      <button type="button" class="btn" onClick={onDismiss}>
        I have copied it: hide the secret
      </button>
    </section>
  );
}

interface PreviewFormProps {
  config: PreviewConfigView;
  onSaved: (answer: PutPreviewConfigAnswer) => void;
  /** Absent for the first configuration: there is nothing to go back to. */
  onCancel: (() => void) | undefined;
}

function PreviewForm({ config, onSaved, onCancel }: PreviewFormProps) {
  const [input, setInput] = useState<PreviewInput>(() => inputOf(config));
  const [errors, setErrors] = useState<PreviewErrors>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    // Opened by "Change settings": its first field takes the focus from the button.
    if (config.configured) document.getElementById('preview-repository')?.focus();
  }, []);

  const set = (field: keyof PreviewInput) => (value: string) => setInput((v) => ({ ...v, [field]: value }));
  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    const found = previewErrors(input);
    setErrors(found);
    const first = firstPreviewError(found);
    if (first) {
      document.getElementById(`preview-${first}`)?.focus();
      return;
    }
    setBusy(true);
    setError(null);
    const { data, error: failure } = await api.PUT('/api/preview/config', { body: putPreviewBody(input) });
    setBusy(false);
    if (data) onSaved(data);
    else setError(errorMessage(failure));
  };

  const vmHint = 'Where the preview is built and runs. "My default VM" is the default VM of whoever saves these settings.';
  return (
    <form class="vm-form subpanel" onSubmit={submit} noValidate aria-labelledby="preview-form-title">
      <h3 id="preview-form-title">{config.configured ? 'Change the preview settings' : 'Set up the preview'}</h3>
      <TextField
        id="preview-repository"
        label="Repository"
        placeholder="owner/name"
        hint="GitHub's owner/name, a clone URL or a path. Only pushes from this repository deploy."
        exact
        value={input.repository}
        set={set('repository')}
        error={errors.repository}
      />
      <TextField
        id="preview-branch"
        label="Branch"
        hint="Only pushes to this branch deploy."
        exact
        value={input.branch}
        set={set('branch')}
        error={errors.branch}
      />
      <div class="field">
        <label for="preview-vmId">VM</label>
        <select
          id="preview-vmId"
          value={input.vmId}
          aria-describedby="preview-vmId-hint"
          onChange={(e) => set('vmId')(e.currentTarget.value)}
        >
          {vmChoices(myVms.value, input.vmId).map((choice) => (
            <option key={choice.value} value={choice.value}>
              {choice.label}
            </option>
          ))}
        </select>
        <p class="hint" id="preview-vmId-hint">
          {vmHint}
        </p>
        <FieldError id="preview-vmId-error" message={errors.vmId} />
      </div>
      <TextField
        id="preview-workDir"
        label="Work directory (optional)"
        placeholder="/srv/preview"
        hint="Where the repository is checked out on the VM; CoVibe picks one when empty."
        exact
        value={input.workDir}
        set={set('workDir')}
        error={errors.workDir}
      />
      <TextField
        id="preview-buildCommand"
        label="Build command (optional)"
        placeholder="npm ci && npm run build"
        hint="Runs in the checkout after each push, before the start command."
        exact
        value={input.buildCommand}
        set={set('buildCommand')}
        error={errors.buildCommand}
      />
      <TextField
        id="preview-startCommand"
        label="Start command"
        placeholder="npm start"
        hint="Starts the preview and keeps running; it listens on the port below."
        exact
        value={input.startCommand}
        set={set('startCommand')}
        error={errors.startCommand}
      />
      <TextField
        id="preview-port"
        label="Port"
        placeholder="3000"
        inputMode="numeric"
        value={input.port}
        set={set('port')}
        error={errors.port}
      />
      <TextField
        id="preview-healthPath"
        label="Health check path"
        hint="CoVibe asks for it to know the preview is up; / when empty."
        exact
        value={input.healthPath}
        set={set('healthPath')}
        error={errors.healthPath}
      />
      <TextField
        id="preview-publicUrl"
        label="Public address (optional)"
        hint="Where you expose the app yourself; needed for a VM that dials in. Empty: CoVibe serves it to the team."
        exact
        value={input.publicUrl}
        set={set('publicUrl')}
        error={errors.publicUrl}
      />
      {!config.configured && <p class="hint">Saving makes the team's GitHub webhook secret, shown only once.</p>}
      <ErrorText error={error} />
      <div class="vm-actions vm-actions-end">
        {onCancel && (
          <button type="button" class="btn btn-ghost" onClick={onCancel}>
            Cancel
          </button>
        )}
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Saving…' : 'Save preview settings'}
        </button>
      </div>
    </form>
  );
}
