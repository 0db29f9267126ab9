// My VMs: the member's own machines agents run on. `local` runs agents on the CoVibe host;
// `dial_in` is a VM that connects out to CoVibe with `covibe vm-agent daemon` and a token;
// `ssh_proxy` is a VM CoVibe signs in to over SSH with a key or password it keeps sealed.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api, errorMessage } from '../api/client';
import type { VmView } from '../api/types';
import { CopyButton, ErrorText } from '../app/ui';
import { myVms } from './myVms';
import { AddressFields, CredentialFields, focusFirstError } from './VmFields';
import { emptySshVm, registerSshBody, sshVmErrors, withoutSecrets, type FieldErrors, type SshVmInput } from './vmForm';
import { VmSheet } from './VmSheet';
import { health, strategyName } from './vmStatus';

/** A single-quoted shell word. */
const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The command that runs the daemon of a dial-in VM. */
export function daemonCommand(vmId: string, token: string, connectorUrl: string): string {
  return [
    `COVIBE_VM_TOKEN=${quote(token)} covibe vm-agent daemon \\`,
    `  --connector-url ${quote(connectorUrl)} \\`,
    `  --vm-id ${quote(vmId)} \\`,
    `  --command 'claude -p --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio'`,
  ].join('\n');
}

type Strategy = 'local' | 'dial_in' | 'ssh_proxy';

export function Vms() {
  const [vms, setVms] = useState<VmView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [strategy, setStrategy] = useState<Strategy>('dial_in');
  const [input, setInput] = useState<SshVmInput>(emptySshVm);
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>({});
  const [busy, setBusy] = useState(false);
  const [token, setToken] = useState<{ vmId: string; token: string } | null>(null);
  const [connector, setConnector] = useState('');
  const [open, setOpen] = useState<string | null>(null);
  const heading = useRef<HTMLHeadingElement>(null);

  const load = async () => {
    const { data, error: failure } = await api.GET('/api/vm/list');
    if (data) {
      setVms(data.vms);
      myVms.value = data.vms;
    } else setError(errorMessage(failure));
  };
  useEffect(() => {
    void load();
  }, []);

  const mint = async (vmId: string) => {
    setError(null);
    const { data, error: failure } = await api.POST('/api/vm/token', { body: { vmId } });
    if (data) {
      setToken({ vmId, token: data.vmToken });
      // The server's address for dial-ins, still editable: a VM may reach it another way.
      setConnector(data.connectorUrl);
    } else setError(errorMessage(failure));
  };

  const register = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    setError(null);
    setStatus('');
    const ssh = strategy === 'ssh_proxy';
    const errors: FieldErrors = ssh ? sshVmErrors(input) : input.name.trim() ? {} : { name: 'Give the VM a name.' };
    setFieldErrors(errors);
    if (focusFirstError('vm-new', errors)) return;
    const body = ssh ? registerSshBody(input) : { name: input.name.trim(), strategy };
    // Sent once: the form forgets the secrets whatever the answer.
    if (ssh) setInput((v) => withoutSecrets(v));
    setBusy(true);
    const { data, error: failure } = await api.POST('/api/vm/register', { body });
    setBusy(false);
    if (!data) {
      setError(ssh ? `${errorMessage(failure)} The key or password was cleared: enter it again.` : errorMessage(failure));
      return;
    }
    setInput(emptySshVm());
    setStatus(
      ssh
        ? `Registered ${data.vm.name}. CoVibe pins its host key the first time it connects: see Details.`
        : `Registered ${data.vm.name}.`,
    );
    await load();
    if (data.vm.strategy === 'dial_in') await mint(data.vm.id);
  };

  const changeStrategy = (next: Strategy) => {
    setStrategy(next);
    setFieldErrors({});
    // Secrets typed for SSH do not stay behind, hidden, for another kind of VM.
    if (next !== 'ssh_proxy') setInput((v) => withoutSecrets(v));
  };

  const openVm = vms?.find((v) => v.id === open);
  return (
    <section class="card" aria-labelledby="vms-title">
      <h2 id="vms-title" tabIndex={-1} ref={heading}>
        My VMs
      </h2>
      <p class="hint">
        Machines your agents can run on. A dial-in VM connects out to CoVibe, so it needs no open port; CoVibe signs in
        to an SSH VM itself.
      </p>
      <ErrorText error={error} />
      <p role="status" class="status-line">
        {status}
      </p>
      {vms && vms.length > 0 && (
        <ul class="rows" aria-label="My VMs">
          {vms.map((vm) => {
            const h = health(vm);
            return (
              <li key={vm.id} data-vm-id={vm.id}>
                <div class="grow">
                  <div class="title">
                    {vm.name}
                    {vm.isDefault && (
                      <>
                        {' '}
                        <span class="badge">default</span>
                      </>
                    )}
                  </div>
                  <div class="sub">
                    <span class="dot" data-health={h.state} aria-hidden="true" /> {strategyName(vm.strategy)} · {h.summary}
                  </div>
                </div>
                <div class="actions">
                  {vm.strategy === 'dial_in' && (
                    <button type="button" class="btn btn-small" onClick={() => void mint(vm.id)} aria-label={`New token for ${vm.name}`}>
                      New token
                    </button>
                  )}
                  <button type="button" class="btn btn-small" onClick={() => setOpen(vm.id)} aria-label={`Details of ${vm.name}`}>
                    Details
                  </button>
                </div>
              </li>
            );
          })}
        </ul>
      )}
      {vms && vms.length === 0 && <p class="muted">No VMs yet: agents run on this CoVibe's own machine.</p>}
      {token && (
        <div class="notice">
          <p>
            Dial-in token for {vms?.find((v) => v.id === token.vmId)?.name ?? 'the VM'} (shown once; a new one replaces
            it):
          </p>
          <div class="code-box">
            <code data-testid="vm-token">{token.token}</code>
            <CopyButton text={token.token} />
          </div>
          <div class="field">
            <label for="connector-url">vm-connector address (as the VM reaches it)</label>
            <input id="connector-url" type="url" value={connector} onInput={(e) => setConnector((e.currentTarget as HTMLInputElement).value)} />
          </div>
          <p class="label" id="daemon-command-label">
            Run this on the VM:
          </p>
          <pre class="command" data-testid="daemon-command">
            {daemonCommand(token.vmId, token.token, connector)}
          </pre>
          <CopyButton text={daemonCommand(token.vmId, token.token, connector)} label="Copy command" />
        </div>
      )}
      <form class="vm-form" onSubmit={register} noValidate aria-labelledby="vm-new-title">
        <h3 id="vm-new-title">Add a VM</h3>
        <div class="field">
          <label for="vm-strategy">Connects by</label>
          <select id="vm-strategy" value={strategy} onChange={(e) => changeStrategy(e.currentTarget.value as Strategy)}>
            <option value="dial_in">dial-in (the VM connects out)</option>
            <option value="ssh_proxy">SSH (CoVibe signs in to the VM)</option>
            <option value="local">this machine (local)</option>
          </select>
        </div>
        <AddressFields
          prefix="vm-new"
          value={input}
          onChange={(next) => setInput((v) => ({ ...v, ...next }))}
          errors={fieldErrors}
          nameOnly={strategy !== 'ssh_proxy'}
        />
        {strategy === 'ssh_proxy' && (
          <CredentialFields prefix="vm-new" value={input} onChange={(next) => setInput((v) => ({ ...v, ...next }))} errors={fieldErrors} />
        )}
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Registering…' : 'Register VM'}
        </button>
      </form>
      {open && (
        <VmSheet
          key={open}
          vmId={open}
          initial={openVm}
          onChanged={() => void load()}
          onRemoved={(name) => {
            setStatus(`Removed ${name}.`);
            void load();
            // The row that opened the sheet is gone: the card's heading takes the focus.
            heading.current?.focus();
          }}
          onClose={() => setOpen(null)}
        />
      )}
    </section>
  );
}
