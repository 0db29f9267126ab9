// The SSH VM forms as data: what the member typed, what is wrong with it, and the request bodies
// made from it. The secrets (a private key, its passphrase, a password) leave this module only in
// a body; a form drops them (`withoutSecrets`) as soon as it has sent one.

import type { RegisterVm, ReplaceVmCredential, UpdateVm, VmView } from '../api/types';

export type CredentialKind = 'key' | 'password';

/** A credential as typed: the kind chosen and the secret fields. */
export interface CredentialInput {
  kind: CredentialKind;
  privateKey: string;
  passphrase: string;
  password: string;
}

/** Where CoVibe signs in over SSH, as typed (the port as text: empty means 22). */
export interface AddressInput {
  name: string;
  host: string;
  port: string;
  username: string;
  projectDir: string;
}

export type SshVmInput = AddressInput & CredentialInput;

/** A message for each field that is wrong; `credential` is the key-or-password choice itself. */
export type FieldErrors = Partial<Record<keyof AddressInput | 'privateKey' | 'password' | 'credential', string>>;

/** Read key files up to this size: a private key is a few kilobytes. */
export const MAX_KEY_BYTES = 64 * 1024;

export const noCredential = (kind: CredentialKind = 'key'): CredentialInput => ({
  kind,
  privateKey: '',
  passphrase: '',
  password: '',
});

export const emptySshVm = (): SshVmInput => ({ name: '', host: '', port: '', username: '', projectDir: '', ...noCredential() });

/** The same input with every secret emptied: what a form keeps once it has sent them. */
export function withoutSecrets<T extends CredentialInput>(input: T): T {
  return { ...input, privateKey: '', passphrase: '', password: '' };
}

/** Another kind of credential: the secrets typed for the other kind are dropped, not kept aside. */
export function withKind<T extends CredentialInput>(input: T, kind: CredentialKind): T {
  return input.kind === kind ? input : { ...withoutSecrets(input), kind };
}

/** What is wrong with a pasted private key, or `null` when it looks like one. */
export function keyProblem(text: string): string | null {
  const key = text.trim();
  if (!key) return 'Paste the private key or pick its file.';
  if (/^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+)\s+AAAA/.test(key) || /BEGIN (SSH2 |RSA )?PUBLIC KEY/.test(key)) {
    return 'That is a public key: paste the private one (the file without .pub).';
  }
  if (key.startsWith('PuTTY-User-Key-File')) {
    return 'That is a PuTTY key: convert it to OpenSSH format first (puttygen key.ppk -O private-openssh).';
  }
  if (!/^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(key)) {
    return 'That is not a private key: it starts with -----BEGIN … PRIVATE KEY-----.';
  }
  if (!/-----END [A-Z0-9 ]*PRIVATE KEY-----$/.test(key)) {
    return 'The key is cut short: copy it through its -----END … PRIVATE KEY----- line.';
  }
  return null;
}

/** A key as the server wants it: Unix line ends, no blank lines around it, one final newline. */
export function normalizeKey(text: string): string {
  return text.replace(/\r\n?/g, '\n').trim() + '\n';
}

/** The port typed: `null` when left empty (22), `NaN` when it is not one. */
export function portOf(text: string): number | null {
  const t = text.trim();
  if (!t) return null;
  if (!/^\d{1,5}$/.test(t)) return NaN;
  const port = Number(t);
  return port >= 1 && port <= 65_535 ? port : NaN;
}

function hostProblem(text: string): string | null {
  const host = text.trim();
  if (!host) return 'Enter the host name or IP address.';
  if (host.includes('://')) return 'Only the host name, without ssh:// or https://.';
  if (host.includes('@')) return 'Only the host: the user name goes under Username.';
  if (/^[^:]+:\d+$/.test(host)) return 'Only the host: the port goes under Port.';
  if (/\s/.test(host)) return 'A host name has no spaces.';
  if (host.startsWith('-') || !/^[A-Za-z0-9.:_[\]-]+$/.test(host)) {
    return "A host name or IP address: letters, digits, '.', '-' and ':'.";
  }
  return null;
}

function usernameProblem(text: string): string | null {
  const user = text.trim();
  if (!user) return 'Enter the user CoVibe signs in as.';
  if (/\s/.test(user)) return 'A user name has no spaces.';
  if (user.length > 64 || user.startsWith('-') || !/^[A-Za-z0-9._-]+$/.test(user)) {
    return "A user name is up to 64 letters, digits, '.', '-' or '_'.";
  }
  return null;
}

/** What is wrong with an SSH address (and the VM's name). */
export function addressErrors(input: AddressInput): FieldErrors {
  const errors: FieldErrors = {};
  if (!input.name.trim()) errors.name = 'Give the VM a name.';
  const host = hostProblem(input.host);
  if (host) errors.host = host;
  if (Number.isNaN(portOf(input.port))) errors.port = 'A port from 1 to 65535.';
  const user = usernameProblem(input.username);
  if (user) errors.username = user;
  return errors;
}

/** What is wrong with a credential: exactly one of a private key or a password, well formed. */
export function credentialErrors(input: CredentialInput): FieldErrors {
  const hasKey = input.privateKey.trim() !== '';
  const hasPassword = input.password !== '';
  if (hasKey && hasPassword) return { credential: 'Give a private key or a password, not both.' };
  if (input.kind === 'password') return hasPassword ? {} : { password: 'Enter the password.' };
  const problem = keyProblem(input.privateKey);
  return problem ? { privateKey: problem } : {};
}

export function sshVmErrors(input: SshVmInput): FieldErrors {
  return { ...addressErrors(input), ...credentialErrors(input) };
}

/** The fields in the order the form shows them: the first wrong one gets the focus. */
export const FIELD_ORDER: ReadonlyArray<keyof FieldErrors> = [
  'name',
  'host',
  'port',
  'username',
  'projectDir',
  'credential',
  'privateKey',
  'password',
];

export function firstError(errors: FieldErrors): keyof FieldErrors | null {
  return FIELD_ORDER.find((field) => errors[field]) ?? null;
}

/** The secret part of a body: the key (with its passphrase, if typed) or the password. */
export function credentialBody(input: CredentialInput): ReplaceVmCredential {
  if (input.kind === 'password') return { password: input.password };
  const body: ReplaceVmCredential = { privateKey: normalizeKey(input.privateKey) };
  if (input.passphrase) body.passphrase = input.passphrase;
  return body;
}

/** `POST /api/vm/register` for an SSH VM (a checked input: see `sshVmErrors`). */
export function registerSshBody(input: SshVmInput): RegisterVm {
  const body: RegisterVm = {
    name: input.name.trim(),
    strategy: 'ssh_proxy',
    host: input.host.trim(),
    username: input.username.trim(),
  };
  const port = portOf(input.port);
  if (port !== null) body.port = port;
  const dir = input.projectDir.trim();
  if (dir) body.projectDir = dir;
  return { ...body, ...credentialBody(input) };
}

/** The edit form of a VM, filled from what the server has. */
export function addressOf(vm: VmView): AddressInput {
  return {
    name: vm.name,
    host: vm.host ?? '',
    port: vm.port ? String(vm.port) : '',
    username: vm.username ?? '',
    projectDir: vm.projectDir ?? '',
  };
}

/** What is wrong with an edit: only the name for VMs that are not reached over SSH. */
export function editErrors(vm: VmView, input: AddressInput): FieldErrors {
  const errors = addressErrors(input);
  return vm.strategy === 'ssh_proxy' ? errors : errors.name ? { name: errors.name } : {};
}

/**
 * `PUT /api/vm/update` with the fields that changed, or `null` when none did. An emptied project
 * directory is sent as `""` (back to the server's default); an emptied port as 22.
 */
export function updateBody(vm: VmView, input: AddressInput): UpdateVm | null {
  const body: UpdateVm = { vmId: vm.id };
  const was = addressOf(vm);
  if (input.name.trim() !== was.name) body.name = input.name.trim();
  if (vm.strategy === 'ssh_proxy') {
    if (input.host.trim() !== was.host) body.host = input.host.trim();
    const port = portOf(input.port) ?? 22;
    if (port !== (vm.port ?? 22)) body.port = port;
    if (input.username.trim() !== was.username) body.username = input.username.trim();
    if (input.projectDir.trim() !== was.projectDir) body.projectDir = input.projectDir.trim();
  }
  return Object.keys(body).length > 1 ? body : null;
}

/** A key file's text, refused when it is too big to be a key or not text. */
export function readKeyFile(file: Blob): Promise<string> {
  if (file.size > MAX_KEY_BYTES) {
    return Promise.reject(new Error('That file is too big to be a private key.'));
  }
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const text = typeof reader.result === 'string' ? reader.result : '';
      // A binary file decodes with replacement characters or NULs.
      if (/[\u0000\uFFFD]/.test(text)) reject(new Error('That file is not a text key file.'));
      else resolve(text);
    };
    reader.onerror = () => reject(new Error('The file could not be read.'));
    reader.readAsText(file);
  });
}
