// The fields of the VM forms: an SSH address, and a credential (a private key pasted or read
// from a file, or a password). Each field's id is `<prefix>-<field>`, so a form can focus the
// first wrong one; its message is tied to it with aria-describedby.

import type { JSX } from 'preact';
import { useState } from 'preact/hooks';
import { errorMessage } from '../api/client';
import {
  firstError,
  readKeyFile,
  withKind,
  type AddressInput,
  type CredentialInput,
  type CredentialKind,
  type FieldErrors,
} from './vmForm';

/** Focuses the first field with an error; `true` when there was one. */
export function focusFirstError(prefix: string, errors: FieldErrors): boolean {
  const field = firstError(errors);
  if (!field) return false;
  document.getElementById(`${prefix}-${field}`)?.focus();
  return true;
}

const describedBy = (...ids: Array<string | false | null | undefined>) => ids.filter(Boolean).join(' ') || undefined;

export function FieldError({ id, message }: { id: string; message: string | undefined }) {
  if (!message) return null;
  return (
    <p class="field-error" id={id}>
      {message}
    </p>
  );
}

interface TextFieldProps {
  id: string;
  label: string;
  value: string;
  set: (value: string) => void;
  error?: string | undefined;
  hint?: string;
  type?: 'text' | 'password';
  inputMode?: 'text' | 'numeric';
  placeholder?: string;
  /** Typed exactly as it is: no capitals, spelling fixes or autofill. */
  exact?: boolean;
}

export function TextField({ id, label, value, set, error, hint, type = 'text', inputMode, placeholder, exact }: TextFieldProps) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input
        id={id}
        type={type}
        inputMode={inputMode}
        placeholder={placeholder}
        autocomplete={type === 'password' ? 'new-password' : 'off'}
        autocapitalize={exact ? 'off' : undefined}
        autocorrect={exact ? 'off' : undefined}
        spellcheck={exact ? false : undefined}
        aria-invalid={error ? true : undefined}
        aria-describedby={describedBy(hint && `${id}-hint`, error && `${id}-error`)}
        value={value}
        onInput={(e) => set(e.currentTarget.value)}
      />
      {hint && (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      <FieldError id={`${id}-error`} message={error} />
    </div>
  );
}

interface AddressFieldsProps {
  prefix: string;
  value: AddressInput;
  onChange: (next: AddressInput) => void;
  errors: FieldErrors;
  /** Only the name: the VM is not reached over SSH. */
  nameOnly?: boolean;
}

/** The VM's name and, for SSH, host, port, user and project directory. */
export function AddressFields({ prefix, value, onChange, errors, nameOnly }: AddressFieldsProps) {
  const set = (field: keyof AddressInput) => (v: string) => onChange({ ...value, [field]: v });
  return (
    <>
      <TextField id={`${prefix}-name`} label="VM name" value={value.name} set={set('name')} error={errors.name} />
      {!nameOnly && (
        <>
          <div class="field-pair">
            <TextField
              id={`${prefix}-host`}
              label="Host"
              placeholder="build.example.com"
              exact
              value={value.host}
              set={set('host')}
              error={errors.host}
            />
            <TextField
              id={`${prefix}-port`}
              label="Port"
              placeholder="22"
              inputMode="numeric"
              value={value.port}
              set={set('port')}
              error={errors.port}
            />
          </div>
          <TextField
            id={`${prefix}-username`}
            label="Username"
            exact
            value={value.username}
            set={set('username')}
            error={errors.username}
          />
          <TextField
            id={`${prefix}-projectDir`}
            label="Project directory (optional)"
            hint="Where agents start on the VM; the user's home when left empty."
            placeholder="/home/dev/app"
            exact
            value={value.projectDir}
            set={set('projectDir')}
            error={errors.projectDir}
          />
        </>
      )}
    </>
  );
}

const KINDS: Array<{ kind: CredentialKind; label: string }> = [
  { kind: 'key', label: 'Private key' },
  { kind: 'password', label: 'Password' },
];

interface CredentialFieldsProps {
  prefix: string;
  value: CredentialInput;
  onChange: (next: CredentialInput) => void;
  errors: FieldErrors;
}

/**
 * A private key (pasted, or read from a file into the same box) with its passphrase, or a
 * password. Switching kinds drops what was typed for the other one.
 */
export function CredentialFields({ prefix, value, onChange, errors }: CredentialFieldsProps) {
  const [fileError, setFileError] = useState<string | null>(null);
  const keyId = `${prefix}-privateKey`;

  const pick = async (e: JSX.TargetedEvent<HTMLInputElement>) => {
    const input = e.currentTarget;
    const file = input.files?.[0];
    // The page keeps the key's text, not a handle on the file.
    input.value = '';
    if (!file) return;
    setFileError(null);
    try {
      const text = await readKeyFile(file);
      onChange({ ...value, privateKey: text });
      document.getElementById(keyId)?.focus();
    } catch (err) {
      setFileError(errorMessage(err));
    }
  };

  return (
    <fieldset class="subform">
      <legend>Sign in with</legend>
      <div class="choices choices-2">
        {KINDS.map((k, i) => (
          <button
            key={k.kind}
            id={i === 0 ? `${prefix}-credential` : undefined}
            type="button"
            class="choice"
            aria-pressed={value.kind === k.kind}
            aria-describedby={describedBy(errors.credential && `${prefix}-credential-error`)}
            onClick={() => onChange(withKind(value, k.kind))}
          >
            {k.label}
          </button>
        ))}
      </div>
      <FieldError id={`${prefix}-credential-error`} message={errors.credential} />
      {value.kind === 'key' ? (
        <>
          <div class="field">
            <label for={keyId}>Private key</label>
            <textarea
              id={keyId}
              class="key-input"
              rows={5}
              placeholder="-----BEGIN OPENSSH PRIVATE KEY-----"
              autocomplete="off"
              autocapitalize="off"
              autocorrect="off"
              spellcheck={false}
              aria-invalid={errors.privateKey ? true : undefined}
              aria-describedby={describedBy(`${keyId}-hint`, errors.privateKey && `${keyId}-error`)}
              value={value.privateKey}
              onInput={(e) => onChange({ ...value, privateKey: e.currentTarget.value })}
            />
            <p class="hint" id={`${keyId}-hint`}>
              Paste it or pick its file. It is sent once, stored sealed, and never shown again.
            </p>
            <FieldError id={`${keyId}-error`} message={errors.privateKey} />
          </div>
          <div class="field">
            <label for={`${prefix}-keyFile`}>Or read it from a file</label>
            <input
              id={`${prefix}-keyFile`}
              type="file"
              class="file-input"
              aria-describedby={describedBy(fileError && `${prefix}-keyFile-error`)}
              onChange={(e) => void pick(e)}
            />
            <FieldError id={`${prefix}-keyFile-error`} message={fileError ?? undefined} />
          </div>
          <TextField
            id={`${prefix}-passphrase`}
            label="Key passphrase (if it has one)"
            type="password"
            value={value.passphrase}
            set={(v) => onChange({ ...value, passphrase: v })}
          />
        </>
      ) : (
        <TextField
          id={`${prefix}-password`}
          label="Password"
          type="password"
          hint="Sent once, stored sealed, never shown again. A key is safer where the VM allows one."
          value={value.password}
          set={(v) => onChange({ ...value, password: v })}
          error={errors.password}
        />
      )}
    </fieldset>
  );
}
