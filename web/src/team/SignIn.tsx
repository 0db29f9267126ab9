// Signing in: create a team, join one with an invite code, or use a device code made on a device
// already signed in.

import type { ComponentChildren } from 'preact';
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

interface FieldProps {
  id: string;
  label: string;
  value: string;
  set: (v: string) => void;
  type?: 'text' | 'email';
  autocomplete?: string;
  /** A code typed as it is shown: no capitals or spelling fixes. */
  code?: boolean;
}

function Field({ id, label, value: current, set, type = 'text', autocomplete = 'off', code = false }: FieldProps) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input
        id={id}
        type={type}
        autocomplete={autocomplete}
        autocapitalize={code ? 'off' : undefined}
        spellcheck={code ? false : undefined}
        value={current}
        onInput={(e) => set(value(e))}
      />
    </div>
  );
}

/** A sign-in form: its fields, then one submit button that says when it is working. */
function Form(props: { onSubmit: () => void; busy: boolean; idle: string; working: string; children: ComponentChildren }) {
  const submit = (e: Event) => {
    e.preventDefault();
    props.onSubmit();
  };
  return (
    <form class="form card" onSubmit={submit} noValidate>
      {props.children}
      <button type="submit" class="btn btn-primary btn-block" disabled={props.busy}>
        {props.busy ? props.working : props.idle}
      </button>
    </form>
  );
}

function CreateForm({ busy, run }: FormProps) {
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [displayName, setDisplayName] = useState('');
  const submit = () =>
    void run(() =>
      api.POST('/api/team/create', {
        body: { name: name.trim(), email: email.trim(), displayName: displayName.trim(), deviceName: deviceName() },
      }),
    );
  return (
    <Form onSubmit={submit} busy={busy} idle="Create team" working="Creating…">
      <Field id="team-name" label="Team name" value={name} set={setName} autocomplete="organization" />
      <Field id="create-email" label="Your email" value={email} set={setEmail} type="email" autocomplete="email" />
      <Field id="create-name" label="Your name" value={displayName} set={setDisplayName} autocomplete="name" />
    </Form>
  );
}

/** A random key for one join, sent with each try of it (see `joinKey` in the API). */
function newJoinKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function JoinForm({ busy, run }: FormProps) {
  const [code, setCode] = useState('');
  const [email, setEmail] = useState('');
  const [displayName, setDisplayName] = useState('');
  // One key for every try of this form: a try whose answer was lost (the network, a server
  // restart) made the member, and the next try signs that member in instead of being refused.
  const [joinKey] = useState(newJoinKey);
  const submit = () =>
    void run(() =>
      api.POST('/api/auth/login', {
        body: {
          inviteCode: code.trim(),
          email: email.trim(),
          displayName: displayName.trim(),
          deviceName: deviceName(),
          joinKey,
        },
      }),
    );
  return (
    <Form onSubmit={submit} busy={busy} idle="Join team" working="Joining…">
      <Field id="invite-code" label="Invite code" value={code} set={setCode} code />
      <Field id="join-email" label="Your email" value={email} set={setEmail} type="email" autocomplete="email" />
      <Field id="join-name" label="Your name" value={displayName} set={setDisplayName} autocomplete="name" />
    </Form>
  );
}

function DeviceForm({ busy, run }: FormProps) {
  const [code, setCode] = useState('');
  const [name, setName] = useState(() => deviceName());
  const submit = () =>
    void run(() =>
      api.POST('/api/auth/device/redeem', { body: { code: code.trim(), deviceName: name.trim() || deviceName() } }),
    );
  return (
    <Form onSubmit={submit} busy={busy} idle="Sign in" working="Signing in…">
      <p class="hint">On a device already signed in, open Team and choose “Sign in another device”.</p>
      <Field id="device-code" label="Device code" value={code} set={setCode} autocomplete="one-time-code" code />
      <Field id="device-name" label="Device name" value={name} set={setName} />
    </Form>
  );
}
