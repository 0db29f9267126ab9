// Team: members and roles, invites, signing in other devices, sessions, my VMs, the tool
// policy, the team preview's settings (owners and admins), signing out.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api, errorMessage, loadMe } from '../api/client';
import { session, signOut } from '../api/session';
import type { InviteInfo, NewInvite, Role, SessionInfo, SignInCode, User } from '../api/types';
import { ago, countdown, dateTime, initials } from '../app/format';
import { CopyButton, ErrorText } from '../app/ui';
import { members as teamMembers } from './members';
import { PolicyCard } from './PolicyCard';
import { PreviewCard } from './PreviewCard';
import { Qr } from './Qr';
import { Vms } from './Vms';

const RANK: Record<Role, number> = { owner: 3, admin: 2, member: 1 };

export function TeamScreen() {
  useEffect(() => {
    void loadMe().catch(() => {});
  }, []);
  const s = session.value;
  if (!s) return null;
  const manager = s.user.role === 'owner' || s.user.role === 'admin';
  return (
    <div class="screen">
      <div class="screen-head">
        <h1>{s.team.name}</h1>
        <span class="badge">you are {s.user.role}</span>
      </div>
      <div class="screen-grid">
        <Members />
        {manager && <Invites />}
        <Devices />
        <Vms />
        <PolicyCard />
        {manager && <PreviewCard />}
        <section class="card wide" aria-labelledby="account-title">
          <h2 id="account-title">This device</h2>
          <p class="muted">
            Signed in as {s.user.displayName} ({s.user.email}).
          </p>
          <button type="button" class="btn btn-danger" onClick={() => void signOut()}>
            Sign out
          </button>
        </section>
      </div>
    </div>
  );
}

// Members

function Members() {
  const [members, setMembers] = useState<User[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [code, setCode] = useState<{ name: string; code: SignInCode } | null>(null);
  const me = session.value?.user;

  const load = async () => {
    const { data, error: failure } = await api.GET('/api/team');
    if (data) {
      setMembers(data.members);
      teamMembers.value = data.members;
      setError(null);
    } else setError(errorMessage(failure));
  };
  useEffect(() => {
    void load();
  }, []);

  const myRole = members?.find((m) => m.id === me?.id)?.role ?? me?.role ?? 'member';
  const act = async (call: () => Promise<{ error?: unknown }>) => {
    setError(null);
    const { error: failure } = await call();
    if (failure) setError(errorMessage(failure));
    await load();
    void loadMe().catch(() => {});
  };

  const sorted = [...(members ?? [])].sort(
    (a, b) => RANK[b.role] - RANK[a.role] || a.displayName.localeCompare(b.displayName),
  );
  return (
    <section class="card wide" aria-labelledby="members-title">
      <div class="card-head">
        <h2 id="members-title">Members</h2>
        {members && <span class="muted">{members.length}</span>}
      </div>
      <ErrorText error={error} />
      {!members && !error && <p class="loading">Loading members…</p>}
      <ul class="rows" aria-label="Members">
        {sorted.map((m) => (
          <MemberRow
            key={m.id}
            member={m}
            me={m.id === me?.id}
            myRole={myRole}
            onRole={(role) =>
              act(() => api.PUT('/api/team/members/{id}/role', { params: { path: { id: m.id } }, body: { role } }))
            }
            onRemove={() => act(() => api.DELETE('/api/team/members/{id}', { params: { path: { id: m.id } } }))}
            onTransfer={() => act(() => api.POST('/api/team/transfer-ownership', { body: { userId: m.id } }))}
            onRecovery={async () => {
              setError(null);
              const { data, error: failure } = await api.POST('/api/team/members/{id}/recovery-code', {
                params: { path: { id: m.id } },
              });
              if (data) setCode({ name: m.displayName, code: data });
              else setError(errorMessage(failure));
            }}
          />
        ))}
      </ul>
      {code && (
        <div class="notice">
          <p>
            A one-time sign-in code for {code.name} (they enter it under “Use a device code”), valid until{' '}
            {dateTime(code.code.expiresAt)}:
          </p>
          <div class="code-box">
            <code class="code-big">{code.code.code}</code>
            <CopyButton text={code.code.code} />
          </div>
        </div>
      )}
    </section>
  );
}

interface MemberRowProps {
  member: User;
  me: boolean;
  myRole: Role;
  onRole: (role: 'admin' | 'member') => Promise<void>;
  onRemove: () => Promise<void>;
  onTransfer: () => Promise<void>;
  onRecovery: () => Promise<void>;
}

function MemberRow({ member, me, myRole, onRole, onRemove, onTransfer, onRecovery }: MemberRowProps) {
  const [confirm, setConfirm] = useState<'remove' | 'transfer' | null>(null);
  const outranked = !me && RANK[myRole] > RANK[member.role];
  const owner = myRole === 'owner';
  return (
    <li data-user-id={member.id}>
      <span class="avatar" aria-hidden="true">
        {initials(member.displayName)}
      </span>
      <div class="grow">
        <div class="title">
          {member.displayName}
          {me && <span class="muted"> (you)</span>}
        </div>
        {member.email && <div class="sub">{member.email}</div>}
        <div class="sub">
          <span class="badge">{member.role}</span>
        </div>
      </div>
      {outranked && (
        <div class="actions">
          {owner && (
            <>
              <select
                aria-label={`Role of ${member.displayName}`}
                class="role-select"
                value={member.role}
                onChange={(e) => void onRole((e.currentTarget as HTMLSelectElement).value as 'admin' | 'member')}
              >
                <option value="admin">admin</option>
                <option value="member">member</option>
              </select>
            </>
          )}
          {confirm === null && (
            <>
              <button type="button" class="btn btn-small" onClick={() => void onRecovery()} aria-label={`Recovery code for ${member.displayName}`}>
                Recovery code
              </button>
              {owner && (
                <button type="button" class="btn btn-small" onClick={() => setConfirm('transfer')} aria-label={`Make owner: ${member.displayName}`}>
                  Make owner
                </button>
              )}
              <button type="button" class="btn btn-danger btn-small" onClick={() => setConfirm('remove')} aria-label={`Remove ${member.displayName}`}>
                Remove
              </button>
            </>
          )}
          {confirm !== null && (
            <>
              <button
                type="button"
                class="btn btn-danger btn-small"
                onClick={() => {
                  setConfirm(null);
                  void (confirm === 'remove' ? onRemove() : onTransfer());
                }}
              >
                {confirm === 'remove' ? `Yes, remove ${member.displayName}` : `Yes, hand the team to ${member.displayName}`}
              </button>
              <button type="button" class="btn btn-ghost btn-small" onClick={() => setConfirm(null)}>
                Cancel
              </button>
            </>
          )}
        </div>
      )}
    </li>
  );
}

// Invites

function inviteState(invite: InviteInfo, now: number): string {
  if (invite.revoked) return 'revoked';
  if (invite.expiresAt <= now) return 'expired';
  if (!invite.usable) return 'used up';
  return 'active';
}

function Invites() {
  const [invites, setInvites] = useState<InviteInfo[] | null>(null);
  const [created, setCreated] = useState<NewInvite | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = async () => {
    const { data, error: failure } = await api.GET('/api/team/invites');
    if (data) setInvites(data.invites);
    else setError(errorMessage(failure));
  };
  useEffect(() => {
    void load();
  }, []);

  const create = async () => {
    setBusy(true);
    setError(null);
    const { data, error: failure } = await api.POST('/api/team/invite', { body: {} });
    setBusy(false);
    if (data) setCreated(data);
    else setError(errorMessage(failure));
    await load();
  };
  const revoke = async (id: string) => {
    setError(null);
    const { error: failure } = await api.DELETE('/api/team/invite/{id}', { params: { path: { id } } });
    if (failure) setError(errorMessage(failure));
    if (created?.id === id) setCreated(null);
    await load();
  };

  const now = Date.now();
  const shown = (invites ?? []).filter((i) => inviteState(i, now) === 'active' || now - i.createdAt < 7 * 86_400_000);
  return (
    <section class="card" aria-labelledby="invites-title">
      <div class="card-head">
        <h2 id="invites-title">Invites</h2>
        <button type="button" class="btn btn-primary btn-small" onClick={create} disabled={busy}>
          Create invite
        </button>
      </div>
      <p class="hint">Whoever has the code can join this team (under “Join a team”) until it expires.</p>
      <ErrorText error={error} />
      {created && (
        <div class="code-box">
          <code class="code-big" data-testid="invite-code">
            {created.inviteCode}
          </code>
          <CopyButton text={created.inviteCode} />
        </div>
      )}
      {created && (
        <p class="hint">
          Shown once. Up to {created.maxUses} people, until {dateTime(created.expiresAt)}.
        </p>
      )}
      {invites && shown.length > 0 && (
        <ul class="rows" aria-label="Invites">
          {shown.map((invite) => {
            const state = inviteState(invite, now);
            return (
              <li key={invite.id}>
                <div class="grow">
                  <div class="title">
                    Invite · {state}
                    {invite.id === created?.id && <span class="muted"> (new)</span>}
                  </div>
                  <div class="sub">
                    {invite.uses}/{invite.maxUses} used · made {ago(invite.createdAt, now)} · expires{' '}
                    {dateTime(invite.expiresAt)}
                  </div>
                </div>
                {state === 'active' && (
                  <button type="button" class="btn btn-small" onClick={() => void revoke(invite.id)} aria-label={`Revoke the invite made ${ago(invite.createdAt, now)}`}>
                    Revoke
                  </button>
                )}
              </li>
            );
          })}
        </ul>
      )}
      {invites && shown.length === 0 && <p class="muted">No invites yet.</p>}
    </section>
  );
}

// Devices

function Devices() {
  const [code, setCode] = useState<SignInCode | null>(null);
  const [sessions, setSessions] = useState<SessionInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [now, setNow] = useState(Date.now());

  const load = async () => {
    const { data, error: failure } = await api.GET('/api/auth/sessions');
    if (data) setSessions(data.sessions);
    else setError(errorMessage(failure));
  };
  useEffect(() => {
    void load();
  }, []);
  useEffect(() => {
    if (!code) return;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [code]);

  const makeCode = async () => {
    setError(null);
    const { data, error: failure } = await api.POST('/api/auth/device');
    if (data) {
      setCode(data);
      setNow(Date.now());
    } else setError(errorMessage(failure));
  };
  const revoke = async (s: SessionInfo) => {
    if (s.current) return signOut();
    setError(null);
    const { error: failure } = await api.DELETE('/api/auth/sessions/{id}', { params: { path: { id: s.id } } });
    if (failure) setError(errorMessage(failure));
    await load();
  };
  const endAll = async () => {
    setError(null);
    const { error: failure } = await api.POST('/api/auth/logout-all');
    if (failure) setError(errorMessage(failure));
    else await signOut('You signed out on all your devices.');
  };

  const shown = useRef<HTMLDivElement>(null);
  // A new code is what the member came for: bring it on screen.
  useEffect(() => {
    if (code) shown.current?.scrollIntoView({ block: 'center' });
  }, [code?.code]);

  const left = code ? code.expiresAt - now : 0;
  return (
    <section class="card" aria-labelledby="devices-title">
      <div class="card-head">
        <h2 id="devices-title">Devices</h2>
        <button type="button" class="btn btn-primary btn-small" onClick={makeCode}>
          Sign in another device
        </button>
      </div>
      <ErrorText error={error} />
      {code && (
        <div class="device-code" ref={shown}>
          <Qr payload={code.qrPayload} />
          <div>
            <p class="hint">On the other device choose “Use a device code” and enter:</p>
            <p class="code-box">
              <code class="code-big" data-testid="device-code">
                {code.code}
              </code>
            </p>
            <p class="hint" aria-live="off">
              {left > 0 ? `Expires in ${countdown(left)}` : 'Expired: make a new one.'}
            </p>
          </div>
        </div>
      )}
      <h3>Signed-in devices</h3>
      {!sessions && !error && <p class="loading">Loading sessions…</p>}
      {sessions && (
        <ul class="rows" aria-label="Sessions">
          {sessions.map((s) => (
            <li key={s.id}>
              <div class="grow">
                <div class="title">
                  {s.deviceName || 'Unnamed device'}
                  {s.current && (
                    <>
                      {' '}
                      <span class="badge">this device</span>
                    </>
                  )}
                </div>
                <div class="sub">
                  Signed in {dateTime(s.createdAt)} · last used {ago(s.lastUsedAt)}
                </div>
              </div>
              {!s.current && (
                <button type="button" class="btn btn-small" onClick={() => void revoke(s)} aria-label={`Revoke ${s.deviceName || 'this session'}`}>
                  Revoke
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {sessions && sessions.length > 1 && (
        <button type="button" class="btn btn-ghost btn-small" onClick={endAll}>
          End every session
        </button>
      )}
    </section>
  );
}
