// Signing in: create a team, join one with an invite code, or use a device code made on a device
// already signed in.

import { useEffect, useState } from 'preact/hooks';
import { api, errorMessage } from '../api/client';
import { signedOutNotice, startSession } from '../api/session';
import type { ApiSession } from '../api/types';
import { Mark } from '../app/icons';
import { ErrorText } from '../app/ui';

type Mode = 'create' | 'join' | 'device';

/** "Chrome on Android", "Safari on iPhone": how the sessions list names this device. */
export function deviceName(ua: string = typeof navigator === 'undefined' ? '' : navigator.userAgent): string {
  const browser = /Edg\//.test(ua)
    ? 'Edge'
    : /Firefox\//.test(ua)
      ? 'Firefox'
      : /Chrome\//.test(ua)
        ? 'Chrome'
        : /Safari\//.test(ua)
          ? 'Safari'
          : 'Browser';
  const system = /iPhone/.test(ua)
    ? 'iPhone'
    : /iPad/.test(ua)
      ? 'iPad'
      : /Android/.test(ua)
        ? 'Android'
        : /Mac OS X/.test(ua)
          ? 'Mac'
          : /Windows/.test(ua)
            ? 'Windows'
            : /Linux/.test(ua)
              ? 'Linux'
              : '';
  return system ? `${browser} on ${system}` : browser;
}

const MODES: Array<{ mode: Mode; label: string }> = [
  { mode: 'create', label: 'Create a team' },
  { mode: 'join', label: 'Join a team' },
  { mode: 'device', label: 'Use a device code' },
];

export function SignIn() {
  const [mode, setMode] = useState<Mode>('create');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const notice = signedOutNotice.value;

  useEffect(() => {
    document.title = 'Sign in · CoVibe';
  }, []);

  const choose = (next: Mode) => {
    setMode(next);
    setError(null);
  };

  const run = async (call: () => Promise<{ data?: ApiSession; error?: unknown; response: Response }>) => {
    setBusy(true);
    setError(null);
    try {
      const { data, error: failure, response } = await call();
      if (!data) {
        setError(errorMessage(failure ?? `The server answered ${response.status}.`));
        return;
      }
      startSession(data, response);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin" id="main">
      <div class="signin-inner">
        <div class="signin-brand">
          <Mark />
          <h1>CoVibe</h1>
        </div>
        <p class="muted">Run your team's coding agents together: watch them work, talk it over, ship, from your phone.</p>
        {notice && (
          <p class="notice" role="status">
            {notice}
          </p>
        )}
        <div class="choices" role="group" aria-label="How to sign in">
          {MODES.map((m) => (
            <button
              key={m.mode}
              type="button"
              class="choice"
              aria-pressed={mode === m.mode}
              onClick={() => choose(m.mode)}
            >
              {m.label}
            </button>
          ))}
        </div>
        {mode === 'create' && <CreateForm busy={busy} run={run} />}
        {mode === 'join' && <JoinForm busy={busy} run={run} />}
        {mode === 'device' && <DeviceForm busy={busy} run={run} />}
        <ErrorText error={error} />
      </div>
    </main>
  );
}

interface FormProps {
  busy: boolean;
  run: (call: () => Promise<{ data?: ApiSession; error?: unknown; response: Response }>) => Promise<void>;
}

const value = (e: Event) => (e.currentTarget as HTMLInputElement).value;

function CreateForm({ busy, run }: FormProps) {
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [displayName, setDisplayName] = useState('');
  const submit = (e: Event) => {
    e.preventDefault();
    void run(() =>
      api.POST('/api/team/create', {
        body: { name: name.trim(), email: email.trim(), displayName: displayName.trim(), deviceName: deviceName() },
      }),
    );
  };
  return (
    <form class="form card" onSubmit={submit} noValidate>
      <div class="field">
        <label for="team-name">Team name</label>
        <input id="team-name" type="text" autocomplete="organization" value={name} onInput={(e) => setName(value(e))} />
      </div>
      <div class="field">
        <label for="create-email">Your email</label>
        <input id="create-email" type="email" autocomplete="email" value={email} onInput={(e) => setEmail(value(e))} />
      </div>
      <div class="field">
        <label for="create-name">Your name</label>
        <input id="create-name" type="text" autocomplete="name" value={displayName} onInput={(e) => setDisplayName(value(e))} />
      </div>
      <button type="submit" class="btn btn-primary btn-block" disabled={busy}>
        {busy ? 'Creating…' : 'Create team'}
      </button>
    </form>
  );
}

function JoinForm({ busy, run }: FormProps) {
  const [code, setCode] = useState('');
  const [email, setEmail] = useState('');
  const [displayName, setDisplayName] = useState('');
  const submit = (e: Event) => {
    e.preventDefault();
    void run(() =>
      api.POST('/api/auth/login', {
        body: { inviteCode: code.trim(), email: email.trim(), displayName: displayName.trim(), deviceName: deviceName() },
      }),
    );
  };
  return (
    <form class="form card" onSubmit={submit} noValidate>
      <div class="field">
        <label for="invite-code">Invite code</label>
        <input
          id="invite-code"
          type="text"
          autocomplete="off"
          autocapitalize="off"
          spellcheck={false}
          value={code}
          onInput={(e) => setCode(value(e))}
        />
      </div>
      <div class="field">
        <label for="join-email">Your email</label>
        <input id="join-email" type="email" autocomplete="email" value={email} onInput={(e) => setEmail(value(e))} />
      </div>
      <div class="field">
        <label for="join-name">Your name</label>
        <input id="join-name" type="text" autocomplete="name" value={displayName} onInput={(e) => setDisplayName(value(e))} />
      </div>
      <button type="submit" class="btn btn-primary btn-block" disabled={busy}>
        {busy ? 'Joining…' : 'Join team'}
      </button>
    </form>
  );
}

function DeviceForm({ busy, run }: FormProps) {
  const [code, setCode] = useState('');
  const [name, setName] = useState(() => deviceName());
  const submit = (e: Event) => {
    e.preventDefault();
    void run(() =>
      api.POST('/api/auth/device/redeem', { body: { code: code.trim(), deviceName: name.trim() || deviceName() } }),
    );
  };
  return (
    <form class="form card" onSubmit={submit} noValidate>
      <p class="hint">On a device already signed in, open Team and choose “Sign in another device”.</p>
      <div class="field">
        <label for="device-code">Device code</label>
        <input
          id="device-code"
          type="text"
          autocomplete="one-time-code"
          autocapitalize="off"
          spellcheck={false}
          value={code}
          onInput={(e) => setCode(value(e))}
        />
      </div>
      <div class="field">
        <label for="device-name">Device name</label>
        <input id="device-name" type="text" autocomplete="off" value={name} onInput={(e) => setName(value(e))} />
      </div>
      <button type="submit" class="btn btn-primary btn-block" disabled={busy}>
        {busy ? 'Signing in…' : 'Sign in'}
      </button>
    </form>
  );
}
