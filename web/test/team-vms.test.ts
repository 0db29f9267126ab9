// @vitest-environment jsdom
import { describe, expect, it } from 'vitest';
import type { AuditEntry, VmView } from '../src/api/types';
import { AUDIT_PAGE, emptyAudit, olderQuery, withNewest, withOlder } from '../src/team/auditPaging';
import {
  MAX_KEY_BYTES,
  addressOf,
  credentialErrors,
  editErrors,
  emptySshVm,
  firstError,
  readKeyFile,
  registerSshBody,
  sshVmErrors,
  updateBody,
  withKind,
  withoutSecrets,
  type SshVmInput,
} from '../src/team/vmForm';
import { auditLine, credentialName, health, healthFacts, sshAddress, strategyName } from '../src/team/vmStatus';

const KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----';

const sshInput = (extra: Partial<SshVmInput> = {}): SshVmInput => ({
  ...emptySshVm(),
  name: ' build box ',
  host: ' build.example.com ',
  username: ' dev ',
  privateKey: KEY,
  ...extra,
});

const vm = (extra: Partial<VmView> = {}): VmView => ({
  id: 'vm-1',
  userId: 'u1',
  name: 'build box',
  strategy: 'ssh_proxy',
  lastSeen: 0,
  isDefault: false,
  lastErrorAt: 0,
  connected: false,
  host: 'build.example.com',
  port: 22,
  username: 'dev',
  projectDir: null,
  credential: 'key',
  hostKeyFingerprint: 'SHA256:old',
  pendingHostKeyFingerprint: null,
  lastError: null,
  ...extra,
});

const entry = (id: number, extra: Partial<AuditEntry> = {}): AuditEntry => ({
  id,
  at: 1_000_000 + id,
  actorId: 'u1',
  action: 'agent.spawn',
  result: 'ok',
  ...extra,
});
const ids = (entries: AuditEntry[]) => entries.map((e) => e.id);
const range = (from: number, to: number) => Array.from({ length: from - to + 1 }, (_, i) => entry(from - i));

describe('the SSH VM form', () => {
  it('accepts a complete form and builds a trimmed register body with the key alone', () => {
    const input = sshInput({ port: ' 2222 ', projectDir: ' ~/app ', privateKey: `\r\n${KEY.replace(/\n/g, '\r\n')}\r\n\r\n` });
    expect(sshVmErrors(input)).toEqual({});
    expect(registerSshBody(input)).toEqual({
      name: 'build box',
      strategy: 'ssh_proxy',
      host: 'build.example.com',
      username: 'dev',
      port: 2222,
      projectDir: '~/app',
      privateKey: `${KEY}\n`,
    });
    // A passphrase goes with its key; the port and directory are left to the server when empty.
    const withPassphrase = registerSshBody(sshInput({ passphrase: 'open sesame' }));
    expect(withPassphrase).toMatchObject({ privateKey: `${KEY}\n`, passphrase: 'open sesame' });
    expect(withPassphrase).not.toHaveProperty('port');
    expect(withPassphrase).not.toHaveProperty('projectDir');
    expect(withPassphrase).not.toHaveProperty('password');
  });

  it('sends a password exactly as typed and nothing of a key', () => {
    const input = withKind(sshInput({ passphrase: 'x' }), 'password');
    expect(input.privateKey).toBe('');
    const typed = { ...input, password: ' pass word ' };
    expect(sshVmErrors(typed)).toEqual({});
    const body = registerSshBody(typed);
    expect(body.password).toBe(' pass word ');
    expect(body).not.toHaveProperty('privateKey');
    expect(body).not.toHaveProperty('passphrase');
  });

  it('says what is missing or wrong, field by field, first field first', () => {
    const errors = sshVmErrors({ ...emptySshVm(), port: '70000' });
    expect(Object.keys(errors).sort()).toEqual(['host', 'name', 'port', 'privateKey', 'username']);
    expect(errors.port).toMatch(/from 1 to 65535/);
    expect(firstError(errors)).toBe('name');
    expect(sshVmErrors(sshInput({ port: '0' })).port).toBeDefined();
    expect(sshVmErrors(sshInput({ port: '22a' })).port).toBeDefined();
    expect(sshVmErrors(sshInput({ host: 'dev@box' })).host).toMatch(/Username/);
    expect(sshVmErrors(sshInput({ host: 'box:2222' })).host).toMatch(/Port/);
    expect(sshVmErrors(sshInput({ host: 'ssh://box' })).host).toMatch(/ssh:\/\//);
    expect(sshVmErrors(sshInput({ host: '-oProxyCommand=x' })).host).toMatch(/letters, digits/);
    expect(sshVmErrors(sshInput({ username: 'dev;rm' })).username).toMatch(/letters, digits/);
    expect(sshVmErrors(sshInput({ username: 'de v' })).username).toMatch(/no spaces/);
    // An IPv6 address is a host, colons and all.
    expect(sshVmErrors(sshInput({ host: 'fd00::1' }))).toEqual({});
    expect(sshVmErrors(sshInput({ host: '10.0.0.7', username: 'ci-runner_2.x' }))).toEqual({});
  });

  it('wants exactly one credential, and a private key that is one', () => {
    expect(credentialErrors({ kind: 'key', privateKey: KEY, passphrase: '', password: 'pw' }).credential).toMatch(/not both/);
    expect(credentialErrors({ kind: 'password', privateKey: '', passphrase: '', password: '' }).password).toMatch(/password/);
    const key = (privateKey: string) => credentialErrors({ kind: 'key', privateKey, passphrase: '', password: '' }).privateKey;
    expect(key('')).toMatch(/Paste/);
    expect(key('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI dev@laptop')).toMatch(/public key/);
    expect(key('PuTTY-User-Key-File-3: ssh-ed25519')).toMatch(/PuTTY/);
    expect(key('hello')).toMatch(/not a private key/);
    expect(key(KEY.split('\n').slice(0, 2).join('\n'))).toMatch(/cut short/);
    expect(key('-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----')).toBeUndefined();
  });

  it('forgets secrets: after a submit, and when switching kinds', () => {
    const typed = sshInput({ passphrase: 'p', password: '' });
    const after = withoutSecrets(typed);
    expect([after.privateKey, after.passphrase, after.password]).toEqual(['', '', '']);
    expect(after.host).toBe(typed.host);
    const switched = withKind(withKind(typed, 'password'), 'key');
    expect(switched.privateKey).toBe('');
    expect(withKind(typed, 'key')).toBe(typed);
  });
});

describe('editing a VM', () => {
  it('sends only what changed, and nothing when nothing did', () => {
    const v = vm({ port: 2222, projectDir: '/srv/app' });
    expect(updateBody(v, addressOf(v))).toBeNull();
    expect(updateBody(v, { ...addressOf(v), host: ' new.example.com ', port: '' })).toEqual({
      vmId: 'vm-1',
      host: 'new.example.com',
      port: 22,
    });
    expect(updateBody(v, { ...addressOf(v), projectDir: '' })).toEqual({ vmId: 'vm-1', projectDir: '' });
  });

  it('checks only the name of a VM not reached over SSH', () => {
    const dial = vm({ strategy: 'dial_in', host: null, username: null, port: null });
    expect(editErrors(dial, addressOf(dial))).toEqual({});
    expect(editErrors(dial, { ...addressOf(dial), name: ' ' })).toEqual({ name: 'Give the VM a name.' });
    expect(updateBody(dial, { ...addressOf(dial), name: 'renamed', host: 'ignored' })).toEqual({ vmId: 'vm-1', name: 'renamed' });
  });
});

describe('readKeyFile', () => {
  it('reads a key file as text, and refuses big or binary files', async () => {
    expect(await readKeyFile(new Blob([KEY]))).toBe(KEY);
    await expect(readKeyFile(new Blob([new Uint8Array(MAX_KEY_BYTES + 1)]))).rejects.toThrow(/too big/);
    await expect(readKeyFile(new Blob([new Uint8Array([0x00, 0xff, 0xfe, 0x41])]))).rejects.toThrow(/not a text/);
  });
});

describe('VM status in words', () => {
  const now = 10_000_000;
  it('names the strategy, the address and the credential kind, never a secret', () => {
    expect(strategyName('ssh_proxy')).toBe('SSH');
    expect(strategyName('carrier_pigeon')).toBe('carrier_pigeon');
    expect(sshAddress(vm())).toBe('dev@build.example.com');
    expect(sshAddress(vm({ port: 2222 }))).toBe('dev@build.example.com:2222');
    expect(sshAddress(vm({ host: 'fd00::1', port: 2222 }))).toBe('dev@[fd00::1]:2222');
    expect(sshAddress(vm({ strategy: 'dial_in', host: null }))).toBeNull();
    expect(credentialName('key')).toBe('SSH private key');
    expect(credentialName(null)).toBe('none stored');
  });

  it('puts a changed host key first, then the connection, then the latest error', () => {
    expect(health(vm({ connected: true, pendingHostKeyFingerprint: 'SHA256:new' }), now)).toMatchObject({
      state: 'bad',
      summary: expect.stringMatching(/host key changed/),
    });
    expect(health(vm({ connected: true, lastError: 'old trouble', lastErrorAt: now - 1000 }), now)).toEqual({
      state: 'ok',
      summary: 'connected over SSH',
    });
    expect(health(vm({ lastError: 'connection refused', lastErrorAt: now - 120_000, lastSeen: now - 600_000 }), now)).toEqual({
      state: 'bad',
      summary: 'failed 2 min ago: connection refused',
    });
    // An error older than the last time it worked is history, not health.
    expect(health(vm({ lastError: 'connection refused', lastErrorAt: now - 600_000, lastSeen: now - 120_000 }), now)).toEqual({
      state: 'idle',
      summary: 'not connected · last seen 2 min ago',
    });
    expect(health(vm({ strategy: 'dial_in' }), now).summary).toBe('waiting for its daemon to dial in');
    expect(health(vm({ strategy: 'local' }), now).state).toBe('ok');
  });

  it('lists the health facts for the detail sheet', () => {
    const facts = new Map(healthFacts(vm({ lastSeen: now - 30_000, lastError: 'timeout', lastErrorAt: now - 3_600_000 }), now));
    expect(facts.get('Connection')).toBe('not connected');
    expect(facts.get('Last seen')).toBe('just now');
    expect(facts.get('Last error')).toBe('timeout (1 h ago)');
    expect(new Map(healthFacts(vm(), now)).get('Last error')).toBe('none');
  });

  it('writes an audit entry as who did what, with its result and particulars', () => {
    const names = new Map([['u1', 'Sarah']]);
    const line = auditLine(
      entry(7, {
        at: now - 300_000,
        action: 'ssh.connect',
        result: 'refused',
        strategy: 'ssh_proxy',
        agentId: '0123456789abcdef',
        commandDigest: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
        detail: 'host key mismatch',
      }),
      (id) => names.get(id),
      now,
    );
    expect(line).toEqual({
      id: 7,
      at: now - 300_000,
      when: '5 min ago',
      who: 'Sarah',
      what: 'Connect over SSH',
      result: 'refused',
      resultState: 'bad',
      more: ['via SSH', 'agent 01234567…', 'command 9f86d081884c…'],
      detail: 'host key mismatch',
    });
    const unknown = auditLine(entry(8, { actorId: 'u9', action: 'vm.teleport', result: 'error' }), (id) => names.get(id), now);
    expect([unknown.who, unknown.what, unknown.result, unknown.more, unknown.detail]).toEqual(['u9', 'vm.teleport', 'failed', [], null]);
  });
});

describe('audit paging', () => {
  it('pages back by the oldest id held and stops at a short page', () => {
    let paging = emptyAudit();
    expect(olderQuery(paging)).toEqual({ limit: AUDIT_PAGE });
    paging = withNewest(paging, range(50, 50 - AUDIT_PAGE + 1));
    expect(paging.exhausted).toBe(false);
    expect(olderQuery(paging)).toEqual({ before: 50 - AUDIT_PAGE + 1, limit: AUDIT_PAGE });
    // A page that overlaps what is held (an entry seen twice) is merged, newest first.
    paging = withOlder(paging, range(31, 25));
    expect(paging.exhausted).toBe(true);
    expect(ids(paging.entries)).toEqual(range(50, 25).map((e) => e.id));
  });

  it('merges a fresh newest page, and starts over after a gap it cannot fill', () => {
    const held = withOlder(withNewest(emptyAudit(), range(10, 6), 5), range(5, 4), 5);
    expect(held.exhausted).toBe(true);
    const fresh = withNewest(held, range(12, 8), 5);
    expect(ids(fresh.entries)).toEqual([12, 11, 10, 9, 8, 7, 6, 5, 4]);
    expect(fresh.exhausted).toBe(true);
    // Five newer entries, all after the newest held: there may be more between, so start over.
    const gap = withNewest(held, range(20, 16), 5);
    expect(ids(gap.entries)).toEqual([20, 19, 18, 17, 16]);
    expect(gap.exhausted).toBe(false);
    expect(olderQuery(gap, 5)).toEqual({ before: 16, limit: 5 });
  });

  it('knows an empty log is complete', () => {
    expect(withNewest(emptyAudit(), [])).toEqual({ entries: [], exhausted: true });
  });
});
