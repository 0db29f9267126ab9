// One VM in a sheet: how it connects, its health and host key (a changed key is accepted only
// after the member confirms the fingerprint they saw), making it the default, editing it,
// replacing its credential, removing it, and its audit log.

import { Fragment } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, errorMessage } from '../api/client';
import type { VmView } from '../api/types';
import { ErrorText, useFocusOnMount } from '../app/ui';
import { VmAudit } from './VmAudit';
import { AddressFields, CredentialFields, focusFirstError } from './VmFields';
import {
  addressOf,
  credentialBody,
  credentialErrors,
  editErrors,
  noCredential,
  updateBody,
  withoutSecrets,
  type CredentialInput,
  type FieldErrors,
} from './vmForm';
import { credentialName, healthFacts, sshAddress, strategyName } from './vmStatus';

/** How often an open sheet reads the VM again: its health changes by itself. */
const REFRESH_MS = 20_000;

interface VmSheetProps {
  vmId: string;
  /** The list's copy, shown until the server's arrives. */
  initial: VmView | undefined;
  onChanged: () => void;
  onRemoved: (name: string) => void;
  onClose: () => void;
}

export function VmSheet({ vmId, initial, onChanged, onRemoved, onClose }: VmSheetProps) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [vm, setVm] = useState<VmView | null>(initial ?? null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [panel, setPanel] = useState<'edit' | 'credential' | 'remove' | null>(null);
  const [busy, setBusy] = useState(false);
  const [auditKey, setAuditKey] = useState(0);

  const refresh = async () => {
    const { data, error: failure } = await api.GET('/api/vm/{id}', { params: { path: { id: vmId } } });
    if (data) setVm(data.vm);
    else setError(errorMessage(failure));
  };
  useEffect(() => {
    const d = dialog.current;
    if (d && !d.open) d.showModal?.();
    void refresh();
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') void refresh();
    }, REFRESH_MS);
    return () => clearInterval(timer);
  }, []);

  /** The VM as the server answered a change; the list and the audit log read again. */
  const changed = (next: VmView, message: string) => {
    setVm(next);
    setPanel(null);
    setStatus(message);
    setAuditKey((k) => k + 1);
    onChanged();
  };

  const run = async (call: () => Promise<{ data?: { vm: VmView }; error?: unknown }>, message: string) => {
    setBusy(true);
    setError(null);
    setStatus('');
    const { data, error: failure } = await call();
    setBusy(false);
    if (data) changed(data.vm, message);
    else {
      setError(errorMessage(failure));
      // The VM may have changed under us (a newer pending key, say): show what it is now.
      void refresh();
    }
  };

  const makeDefault = () =>
    run(() => api.PUT('/api/vm/update', { body: { vmId, isDefault: true } }), 'Agents now run here unless you pick another VM.');
  const accept = (fingerprint: string) =>
    run(
      () => api.POST('/api/vm/{id}/host-key/accept', { params: { path: { id: vmId } }, body: { fingerprint } }),
      'New host key accepted.',
    );
  const remove = async (name: string) => {
    setBusy(true);
    setError(null);
    const { error: failure, response } = await api.DELETE('/api/vm/{id}', { params: { path: { id: vmId } } });
    setBusy(false);
    if (!response.ok) {
      setError(errorMessage(failure));
      return;
    }
    dialog.current?.close();
    onRemoved(name);
  };

  const ssh = vm?.strategy === 'ssh_proxy';
  const address = vm && sshAddress(vm);
  return (
    <dialog ref={dialog} class="vm-sheet" aria-labelledby="vm-sheet-title" onClose={onClose}>
      <div class="sheet-head">
        <h2 id="vm-sheet-title">{vm?.name ?? 'VM'}</h2>
        <button type="button" class="btn btn-ghost btn-small" onClick={() => dialog.current?.close()}>
          Close
        </button>
      </div>
      <ErrorText error={error} />
      <p role="status" class="status-line">
        {status}
      </p>
      {!vm && !error && <p class="loading">Loading…</p>}
      {vm && (
        <>
          {vm.pendingHostKeyFingerprint && (
            <HostKeyChanged key={vm.pendingHostKeyFingerprint} vm={vm} pending={vm.pendingHostKeyFingerprint} busy={busy} onAccept={accept} />
          )}
          <dl class="facts">
            <dt>Connects by</dt>
            <dd>{strategyName(vm.strategy)}</dd>
            {address && (
              <>
                <dt>Address</dt>
                <dd>
                  <code>{address}</code>
                </dd>
              </>
            )}
            {ssh && (
              <>
                <dt>Project directory</dt>
                <dd>{vm.projectDir ? <code>{vm.projectDir}</code> : "the user's home"}</dd>
                <dt>Credential</dt>
                <dd data-testid="vm-credential">{credentialName(vm.credential)}, stored sealed (never shown)</dd>
                <dt>Host key</dt>
                <dd>
                  {vm.hostKeyFingerprint ? (
                    <code class="fingerprint">{vm.hostKeyFingerprint}</code>
                  ) : (
                    'not pinned yet: CoVibe pins the key it sees on its first connection'
                  )}
                </dd>
              </>
            )}
            {healthFacts(vm).map(([label, value]) => (
              <Fragment key={label}>
                <dt>{label}</dt>
                <dd>{value}</dd>
              </Fragment>
            ))}
            <dt>Default</dt>
            <dd>{vm.isDefault ? 'yes: agents run here unless you pick another VM' : 'no'}</dd>
          </dl>
          <div class="vm-actions">
            {!vm.isDefault && (
              <button type="button" class="btn btn-small" onClick={() => void makeDefault()} disabled={busy}>
                Make default
              </button>
            )}
            <button type="button" class="btn btn-small" onClick={() => void refresh()}>
              Refresh
            </button>
            <button type="button" class="btn btn-small" aria-expanded={panel === 'edit'} onClick={() => setPanel(panel === 'edit' ? null : 'edit')}>
              Edit
            </button>
            {ssh && (
              <button
                type="button"
                class="btn btn-small"
                aria-expanded={panel === 'credential'}
                onClick={() => setPanel(panel === 'credential' ? null : 'credential')}
              >
                Replace credential
              </button>
            )}
            <button type="button" class="btn btn-danger btn-small" onClick={() => setPanel('remove')} disabled={panel === 'remove'}>
              Remove VM
            </button>
          </div>
          {panel === 'edit' && <EditVm vm={vm} onSaved={changed} onCancel={() => setPanel(null)} />}
          {panel === 'credential' && <ReplaceCredential vm={vm} onSaved={changed} onCancel={() => setPanel(null)} />}
          {panel === 'remove' && <ConfirmRemove name={vm.name} busy={busy} onRemove={() => void remove(vm.name)} onCancel={() => setPanel(null)} />}
          <VmAudit vmId={vmId} refreshKey={auditKey} />
        </>
      )}
    </dialog>
  );
}

interface HostKeyChangedProps {
  vm: VmView;
  /** The fingerprint the member is shown, and the one accepted: never a newer one unseen. */
  pending: string;
  busy: boolean;
  onAccept: (fingerprint: string) => void;
}

function HostKeyChanged({ vm, pending, busy, onAccept }: HostKeyChangedProps) {
  const [confirming, setConfirming] = useState(false);
  return (
    <section class="warning" aria-labelledby="host-key-title">
      <h3 id="host-key-title">The host key changed</h3>
      <p>
        {vm.host ?? 'The VM'} presented a different SSH host key from the one CoVibe pinned, so CoVibe refused to
        connect. The VM may have been reinstalled or had its keys made again, or someone may be intercepting the
        connection.
      </p>
      <dl class="facts">
        <dt>Pinned key</dt>
        <dd>
          <code class="fingerprint">{vm.hostKeyFingerprint ?? 'none'}</code>
        </dd>
        <dt>New key</dt>
        <dd>
          <code class="fingerprint" data-testid="pending-host-key">
            {pending}
          </code>
        </dd>
      </dl>
      <p>
        Check the new key on the VM itself (<code>ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub</code>) before you
        accept it.
      </p>
      {confirming ? (
        <ConfirmAccept pending={pending} busy={busy} onAccept={() => onAccept(pending)} onCancel={() => setConfirming(false)} />
      ) : (
        <button type="button" class="btn" onClick={() => setConfirming(true)}>
          Accept new host key
        </button>
      )}
    </section>
  );
}

function ConfirmAccept(props: { pending: string; busy: boolean; onAccept: () => void; onCancel: () => void }) {
  const yes = useFocusOnMount<HTMLButtonElement>();
  return (
    <div class="confirm">
      <p>
        Trust <code class="fingerprint">{props.pending}</code> from now on? CoVibe will connect to whichever machine
        presents this key.
      </p>
      <div class="vm-actions">
        <button type="button" class="btn btn-danger" ref={yes} onClick={props.onAccept} disabled={props.busy}>
          Yes, trust the new key
        </button>
        <button type="button" class="btn btn-ghost" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}

function ConfirmRemove(props: { name: string; busy: boolean; onRemove: () => void; onCancel: () => void }) {
  const yes = useFocusOnMount<HTMLButtonElement>();
  return (
    <div class="confirm">
      <p>Remove {props.name}? Its stored credential is deleted and agents can no longer run there.</p>
      <div class="vm-actions">
        <button type="button" class="btn btn-danger" ref={yes} onClick={props.onRemove} disabled={props.busy}>
          Yes, remove {props.name}
        </button>
        <button type="button" class="btn btn-ghost" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}

interface PanelProps {
  vm: VmView;
  onSaved: (vm: VmView, message: string) => void;
  onCancel: () => void;
}

function EditVm({ vm, onSaved, onCancel }: PanelProps) {
  const [input, setInput] = useState(() => addressOf(vm));
  const [errors, setErrors] = useState<FieldErrors>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => document.getElementById('vm-edit-name')?.focus(), []);

  const submit = async (e: Event) => {
    e.preventDefault();
    const found = editErrors(vm, input);
    setErrors(found);
    if (focusFirstError('vm-edit', found)) return;
    const body = updateBody(vm, input);
    if (!body) return onCancel();
    setBusy(true);
    setError(null);
    const { data, error: failure } = await api.PUT('/api/vm/update', { body });
    setBusy(false);
    if (data) onSaved(data.vm, 'Saved.');
    else setError(errorMessage(failure));
  };

  return (
    <form class="vm-form subpanel" onSubmit={submit} noValidate aria-labelledby="vm-edit-title">
      <h3 id="vm-edit-title">Edit {vm.name}</h3>
      <AddressFields prefix="vm-edit" value={input} onChange={setInput} errors={errors} nameOnly={vm.strategy !== 'ssh_proxy'} />
      <ErrorText error={error} />
      <div class="vm-actions vm-actions-end">
        <button type="button" class="btn btn-ghost" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Saving…' : 'Save'}
        </button>
      </div>
    </form>
  );
}

function ReplaceCredential({ vm, onSaved, onCancel }: PanelProps) {
  const [input, setInput] = useState<CredentialInput>(() => noCredential(vm.credential === 'password' ? 'password' : 'key'));
  const [errors, setErrors] = useState<FieldErrors>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => document.getElementById('vm-cred-credential')?.focus(), []);

  const submit = async (e: Event) => {
    e.preventDefault();
    const found = credentialErrors(input);
    setErrors(found);
    if (focusFirstError('vm-cred', found)) return;
    const body = credentialBody(input);
    // Sent once: the form forgets the secrets whatever the answer.
    setInput(withoutSecrets(input));
    setBusy(true);
    setError(null);
    const { data, error: failure } = await api.POST('/api/vm/{id}/credential', { params: { path: { id: vm.id } }, body });
    setBusy(false);
    if (data) onSaved(data.vm, 'New credential saved.');
    else setError(`${errorMessage(failure)} The key or password was cleared: enter it again.`);
  };

  return (
    <form class="vm-form subpanel" onSubmit={submit} noValidate aria-labelledby="vm-cred-title">
      <h3 id="vm-cred-title">Replace the credential</h3>
      <p class="hint">The stored {credentialName(vm.credential)} is replaced; CoVibe uses the new one from its next connection.</p>
      <CredentialFields prefix="vm-cred" value={input} onChange={setInput} errors={errors} />
      <ErrorText error={error} />
      <div class="vm-actions vm-actions-end">
        <button type="button" class="btn btn-ghost" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Saving…' : 'Save new credential'}
        </button>
      </div>
    </form>
  );
}
