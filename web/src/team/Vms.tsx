// My VMs: the member's own machines agents run on. `local` runs agents on the CoVibe host;
// `dial_in` is a VM that connects out to CoVibe with `covibe vm-agent daemon` and a token.

import { useEffect, useState } from 'preact/hooks';
import { api, errorMessage } from '../api/client';
import type { VmView } from '../api/types';
import { ago } from '../app/format';
import { CopyButton, ErrorText } from '../app/ui';

/** A single-quoted shell word. */
const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The command that runs the daemon of a dial-in VM. */
export function daemonCommand(vmId: string, token: string, connectorUrl: string): string {
  return [
    `COVIBE_VM_TOKEN=${quote(token)} covibe vm-agent daemon \\`,
    `  --connector-url ${quote(connectorUrl)} \\`,
    `  --vm-id ${quote(vmId)} \\`,
    `  --command 'claude -p {task} --output-format stream-json --verbose'`,
  ].join('\n');
}

const STRATEGY: Record<string, string> = {
  local: 'runs on the CoVibe host',
  dial_in: 'dial-in',
};

export function Vms() {
  const [vms, setVms] = useState<VmView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [strategy, setStrategy] = useState<'local' | 'dial_in'>('dial_in');
  const [busy, setBusy] = useState(false);
  const [token, setToken] = useState<{ vmId: string; token: string } | null>(null);
  const [connector, setConnector] = useState('');

  const load = async () => {
    const { data, error: failure } = await api.GET('/api/vm/list');
    if (data) setVms(data.vms);
    else setError(errorMessage(failure));
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
    }
    else setError(errorMessage(failure));
  };

  const register = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const { data, error: failure } = await api.POST('/api/vm/register', { body: { name: name.trim(), strategy } });
    setBusy(false);
    if (!data) {
      setError(errorMessage(failure));
      return;
    }
    setName('');
    await load();
    if (data.vm.strategy === 'dial_in') await mint(data.vm.id);
  };

  return (
    <section class="card" aria-labelledby="vms-title">
      <h2 id="vms-title">My VMs</h2>
      <p class="hint">Machines your agents can run on. A dial-in VM connects out to CoVibe, so it needs no open port.</p>
      <ErrorText error={error} />
      {vms && vms.length > 0 && (
        <ul class="rows" aria-label="My VMs">
          {vms.map((vm) => (
            <li key={vm.id} data-vm-id={vm.id}>
              <div class="grow">
                <div class="title">{vm.name}</div>
                <div class="sub">
                  {STRATEGY[vm.strategy] ?? vm.strategy} · last seen {ago(vm.lastSeen)}
                </div>
              </div>
              {vm.strategy === 'dial_in' && (
                <button type="button" class="btn btn-small" onClick={() => void mint(vm.id)} aria-label={`New token for ${vm.name}`}>
                  New token
                </button>
              )}
            </li>
          ))}
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
      <form class="inline-form" onSubmit={register} noValidate>
        <div class="field">
          <label for="vm-name">VM name</label>
          <input id="vm-name" type="text" value={name} autocomplete="off" onInput={(e) => setName((e.currentTarget as HTMLInputElement).value)} />
        </div>
        <div class="field">
          <label for="vm-strategy">Connects by</label>
          <select id="vm-strategy" value={strategy} onChange={(e) => setStrategy((e.currentTarget as HTMLSelectElement).value as 'local' | 'dial_in')}>
            <option value="dial_in">dial-in (the VM connects out)</option>
            <option value="local">this machine (local)</option>
          </select>
        </div>
        <button type="submit" class="btn btn-primary" disabled={busy}>
          Register VM
        </button>
      </form>
    </section>
  );
}
