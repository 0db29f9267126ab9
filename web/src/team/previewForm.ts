// The preview settings as data: what an owner or admin typed, what is wrong with it, the
// `PUT /api/preview/config` body made from it, the VMs to choose from, and the one-time webhook
// secret panel (a secret lives only there, until the member dismisses it).

import type { PreviewConfigView, PutPreviewConfig, PutPreviewConfigAnswer, VmView, WebhookSecret } from '../api/types';

/** The form as typed (the port as text). An empty VM means the saving member's default VM. */
export interface PreviewInput {
  repository: string;
  branch: string;
  vmId: string;
  workDir: string;
  buildCommand: string;
  startCommand: string;
  port: string;
  healthPath: string;
  publicUrl: string;
}

export type PreviewErrors = Partial<Record<keyof PreviewInput, string>>;

/** The fields in the order the form shows them: the first wrong one gets the focus. */
export const PREVIEW_FIELDS: ReadonlyArray<keyof PreviewInput> = [
  'repository',
  'branch',
  'vmId',
  'workDir',
  'buildCommand',
  'startCommand',
  'port',
  'healthPath',
  'publicUrl',
];

export const emptyPreviewInput = (): PreviewInput => ({
  repository: '',
  branch: 'main',
  vmId: '',
  workDir: '',
  buildCommand: '',
  startCommand: '',
  port: '',
  healthPath: '/',
  publicUrl: '',
});

/** The form filled from what the server has (the defaults while nothing is configured). */
export function inputOf(config: PreviewConfigView): PreviewInput {
  if (!config.configured) return emptyPreviewInput();
  return {
    repository: config.repository,
    branch: config.branch || 'main',
    vmId: config.vmId ?? '',
    workDir: config.workDir ?? '',
    buildCommand: config.buildCommand ?? '',
    startCommand: config.startCommand,
    port: config.port ? String(config.port) : '',
    healthPath: config.healthPath || '/',
    publicUrl: config.publicUrl ?? '',
  };
}

function repositoryProblem(text: string): string | null {
  const repo = text.trim();
  if (!repo) return "Enter the repository: GitHub's owner/name, a clone URL or a path.";
  if (/\s/.test(repo)) return 'A repository has no spaces.';
  // It ends up as an argument of `git clone`.
  if (repo.startsWith('-')) return "A repository cannot start with '-'.";
  return null;
}

function branchProblem(text: string): string | null {
  const branch = text.trim();
  if (!branch) return 'Enter the branch whose pushes deploy, such as main.';
  if (/\s/.test(branch)) return 'A branch name has no spaces.';
  if (branch.startsWith('refs/')) return 'Only the branch name, without refs/heads/.';
  // git check-ref-format, the parts people run into.
  if (branch.startsWith('-') || branch.startsWith('/') || branch.endsWith('/') || branch.endsWith('.lock') || /\.\.|[~^:?*[\\]|@\{/.test(branch)) {
    return "That is not a branch name git accepts (no '..', '~', '^', ':', '?', '*', '[' or '\\').";
  }
  return null;
}

/** The port typed, or `null` when it is not one from 1 to 65535. */
export function previewPort(text: string): number | null {
  const t = text.trim();
  if (!/^\d{1,5}$/.test(t)) return null;
  const port = Number(t);
  return port >= 1 && port <= 65_535 ? port : null;
}

function healthProblem(text: string): string | null {
  const path = text.trim();
  if (!path) return null;
  if (!path.startsWith('/')) return 'A path on the preview, starting with / (such as /health).';
  if (/\s/.test(path)) return 'A path has no spaces.';
  return null;
}

/** What is wrong with the form, field by field. */
export function previewErrors(input: PreviewInput): PreviewErrors {
  const errors: PreviewErrors = {};
  const repository = repositoryProblem(input.repository);
  if (repository) errors.repository = repository;
  const branch = branchProblem(input.branch);
  if (branch) errors.branch = branch;
  if (!input.startCommand.trim()) errors.startCommand = 'Enter the command that starts the preview, such as npm start.';
  if (previewPort(input.port) === null) errors.port = 'Enter the port the start command listens on: 1 to 65535.';
  const health = healthProblem(input.healthPath);
  if (health) errors.healthPath = health;
  const publicUrl = input.publicUrl.trim();
  if (publicUrl && !/^https?:\/\/[^\s]+$/.test(publicUrl)) errors.publicUrl = 'An http:// or https:// address, or leave it empty.';
  return errors;
}

export function firstPreviewError(errors: PreviewErrors): keyof PreviewInput | null {
  return PREVIEW_FIELDS.find((field) => errors[field]) ?? null;
}

/**
 * `PUT /api/preview/config` (a checked input: see `previewErrors`). The whole configuration is
 * sent each time; an optional field left empty is `null`, the server's default.
 */
export function putPreviewBody(input: PreviewInput): PutPreviewConfig {
  const optional = (text: string) => text.trim() || null;
  return {
    repository: input.repository.trim(),
    branch: input.branch.trim(),
    vmId: optional(input.vmId),
    workDir: optional(input.workDir),
    buildCommand: optional(input.buildCommand),
    startCommand: input.startCommand.trim(),
    port: previewPort(input.port) ?? 0,
    healthPath: optional(input.healthPath),
    publicUrl: optional(input.publicUrl),
  };
}

export interface VmChoice {
  value: string;
  label: string;
}

/**
 * The VM select: the saver's default first (empty), then their VMs. A VM set by another member
 * is not in the caller's list: it stays a choice, so that opening the form does not change it.
 */
export function vmChoices(vms: readonly VmView[] | null, current: string): VmChoice[] {
  const fallback = vms?.find((vm) => vm.isDefault);
  const choices: VmChoice[] = [{ value: '', label: fallback ? `My default VM (${fallback.name})` : 'My default VM' }];
  for (const vm of vms ?? []) choices.push({ value: vm.id, label: vm.name });
  if (current && !vms?.some((vm) => vm.id === current)) {
    choices.push({ value: current, label: `Another member's VM (${current})` });
  }
  return choices;
}

/** A URL as the server gave it, made absolute against this page's origin if it is not. */
export function absoluteUrl(url: string, origin: string): string {
  try {
    return new URL(url, origin).href;
  } catch {
    return url;
  }
}

/** A webhook secret on screen: shown once, gone when dismissed. */
export interface ShownSecret {
  webhookUrl: string;
  secret: string;
  /** Made by the first configuration (a new webhook), else by a rotation (edit the webhook). */
  first: boolean;
}

export type SecretEvent =
  | { type: 'saved'; answer: PutPreviewConfigAnswer }
  | { type: 'rotated'; answer: WebhookSecret }
  | { type: 'dismissed' };

/**
 * The secret panel. A save shows a secret only when it made one (and otherwise leaves a
 * secret not yet dismissed on screen); a rotation replaces whatever was shown, which no longer
 * works; dismissing forgets it.
 */
export function secretPanel(shown: ShownSecret | null, event: SecretEvent): ShownSecret | null {
  switch (event.type) {
    case 'saved':
      return event.answer.webhookSecret
        ? { webhookUrl: event.answer.webhookUrl, secret: event.answer.webhookSecret, first: true }
        : shown;
    case 'rotated':
      return { webhookUrl: event.answer.webhookUrl, secret: event.answer.webhookSecret, first: false };
    case 'dismissed':
      return null;
  }
}

/**
 * Where the configured preview runs, in words: one of the caller's VMs by name, another
 * member's by id, or the default VM of whoever saved the settings (`savedBy`: "your", "Sarah's").
 */
export function vmLabel(config: PreviewConfigView, vms: readonly VmView[] | null, savedBy: string): string {
  const id = config.vmId ?? '';
  if (!id) return `${savedBy} default VM`;
  return vms?.find((vm) => vm.id === id)?.name ?? `another member's VM (${id})`;
}
