// A VM and its audit log in words: how it connects, whether it is healthy, what was done on it.

import type { AuditEntry, VmView } from '../api/types';
import { ago } from '../app/format';

const STRATEGIES: Record<string, string> = {
  local: 'local',
  dial_in: 'dial-in',
  ssh_proxy: 'SSH',
};

/** How a VM is reached, in a word or two. */
export const strategyName = (strategy: string): string => STRATEGIES[strategy] ?? strategy;

/** `dev@build.example.com` (with `:port` unless 22), or `null` for VMs not reached over SSH. */
export function sshAddress(vm: VmView): string | null {
  if (!vm.host) return null;
  const user = vm.username ? `${vm.username}@` : '';
  const port = vm.port && vm.port !== 22 ? `:${vm.port}` : '';
  // An IPv6 address takes brackets before a port.
  const host = port && vm.host.includes(':') ? `[${vm.host}]` : vm.host;
  return `${user}${host}${port}`;
}

/** The kind of credential stored: the secret itself never comes back. */
export function credentialName(kind: string | null | undefined): string {
  if (kind === 'key') return 'SSH private key';
  if (kind === 'password') return 'password';
  return 'none stored';
}

export type HealthState = 'ok' | 'bad' | 'idle';

export interface Health {
  state: HealthState;
  /** One line for the VM's row. */
  summary: string;
}

/** The VM's last error, when it is newer than the last time the VM was seen working. */
export function currentError(vm: VmView): string | null {
  if (!vm.lastError || vm.connected) return null;
  return vm.lastErrorAt >= vm.lastSeen ? vm.lastError : null;
}

export function health(vm: VmView, now = Date.now()): Health {
  if (vm.strategy === 'local') return { state: 'ok', summary: 'runs on the CoVibe host' };
  if (vm.pendingHostKeyFingerprint) {
    return { state: 'bad', summary: 'host key changed: not connecting until you check it' };
  }
  if (vm.connected) {
    return { state: 'ok', summary: vm.strategy === 'dial_in' ? 'connected' : 'connected over SSH' };
  }
  const error = currentError(vm);
  if (error) return { state: 'bad', summary: `failed ${ago(vm.lastErrorAt, now)}: ${error}` };
  if (vm.lastSeen) return { state: 'idle', summary: `not connected · last seen ${ago(vm.lastSeen, now)}` };
  return {
    state: 'idle',
    summary: vm.strategy === 'dial_in' ? 'waiting for its daemon to dial in' : 'not connected yet',
  };
}

/** The detail sheet's health facts, label then value. */
export function healthFacts(vm: VmView, now = Date.now()): Array<[string, string]> {
  if (vm.strategy === 'local') return [['Health', 'runs on the CoVibe host']];
  const connection = vm.connected
    ? vm.strategy === 'dial_in'
      ? 'connected: the daemon is attached'
      : 'connected: the SSH connection is up'
    : 'not connected';
  return [
    ['Connection', connection],
    ['Last seen', ago(vm.lastSeen, now)],
    ['Last error', vm.lastError ? `${vm.lastError} (${vm.lastErrorAt ? ago(vm.lastErrorAt, now) : 'time unknown'})` : 'none'],
  ];
}

const ACTIONS: Record<string, string> = {
  'vm.register': 'Register VM',
  'vm.update': 'Change VM',
  'vm.credential.replace': 'Replace credential',
  'vm.host_key.accept': 'Accept new host key',
  'vm.delete': 'Remove VM',
  'agent.spawn': 'Start agent',
  'agent.kill': 'Kill agent',
  'agent.input': 'Send input to agent',
  'agent.interrupt': 'Interrupt agent',
  'ssh.connect': 'Connect over SSH',
  'ssh.install': 'Install the VM agent over SSH',
  'ssh.start': 'Start the VM agent over SSH',
};

/** An audited action as the log shows it (an unknown one as its code). */
export const actionName = (action: string): string => ACTIONS[action] ?? action;

const RESULTS: Record<string, { text: string; state: HealthState }> = {
  ok: { text: 'ok', state: 'ok' },
  error: { text: 'failed', state: 'bad' },
  refused: { text: 'refused', state: 'bad' },
  requested: { text: 'requested', state: 'idle' },
};

export interface AuditLine {
  id: number;
  at: number;
  when: string;
  who: string;
  what: string;
  result: string;
  resultState: HealthState;
  /** Strategy, agent and command digest, those the entry has. */
  more: string[];
  detail: string | null;
}

const short = (id: string, n: number) => (id.length > n ? `${id.slice(0, n)}…` : id);

/** One audit entry in words; `nameOf` names a member by id (else the id is shown). */
export function auditLine(entry: AuditEntry, nameOf: (id: string) => string | undefined, now = Date.now()): AuditLine {
  const result = RESULTS[entry.result] ?? { text: entry.result, state: 'idle' as const };
  const more: string[] = [];
  if (entry.strategy) more.push(`via ${strategyName(entry.strategy)}`);
  if (entry.agentId) more.push(`agent ${short(entry.agentId, 8)}`);
  if (entry.commandDigest) more.push(`command ${short(entry.commandDigest, 12)}`);
  return {
    id: entry.id,
    at: entry.at,
    when: ago(entry.at, now),
    who: nameOf(entry.actorId) ?? entry.actorId,
    what: actionName(entry.action),
    result: result.text,
    resultState: result.state,
    more,
    detail: entry.detail || null,
  };
}
