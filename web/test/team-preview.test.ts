import { describe, expect, it } from 'vitest';
import type { PreviewConfigView, PutPreviewConfigAnswer, VmView } from '../src/api/types';
import {
  absoluteUrl,
  emptyPreviewInput,
  firstPreviewError,
  inputOf,
  previewErrors,
  putPreviewBody,
  secretPanel,
  vmChoices,
  vmLabel,
  type PreviewInput,
} from '../src/team/previewForm';

const typed = (extra: Partial<PreviewInput> = {}): PreviewInput => ({
  ...emptyPreviewInput(),
  repository: ' acme/shop ',
  startCommand: ' npm start ',
  port: ' 3000 ',
  ...extra,
});

const config = (extra: Partial<PreviewConfigView> = {}): PreviewConfigView => ({
  configured: true,
  repository: 'acme/shop',
  branch: 'release',
  vmId: 'vm-2',
  workDir: null,
  buildCommand: 'npm ci',
  startCommand: 'npm start',
  port: 3000,
  healthPath: '/health',
  updatedBy: 'u1',
  updatedAt: 1_000,
  ...extra,
});

const vm = (id: string, name: string, isDefault = false): VmView => ({
  id,
  userId: 'u1',
  name,
  strategy: 'dial_in',
  lastSeen: 0,
  isDefault,
  lastErrorAt: 0,
  connected: false,
});

const answer = (webhookSecret?: string | null): PutPreviewConfigAnswer => ({
  config: config(),
  webhookUrl: 'https://covibe.example.com/api/webhook/push?team=t1',
  webhookSecret,
});

describe('the preview settings form', () => {
  it('starts on main and /, and builds a trimmed body with empty optional fields as null', () => {
    expect(emptyPreviewInput()).toMatchObject({ branch: 'main', healthPath: '/', vmId: '', port: '' });
    const input = typed({ buildCommand: ' npm ci ', workDir: '  ', healthPath: '' });
    expect(previewErrors(input)).toEqual({});
    expect(putPreviewBody(input)).toEqual({
      repository: 'acme/shop',
      branch: 'main',
      vmId: null,
      workDir: null,
      buildCommand: 'npm ci',
      startCommand: 'npm start',
      port: 3000,
      healthPath: null,
      publicUrl: null,
    });
    expect(putPreviewBody(typed({ vmId: 'vm-2', healthPath: '/health' }))).toMatchObject({ vmId: 'vm-2', healthPath: '/health' });
  });

  it('says what is missing or wrong, field by field, first field first', () => {
    const errors = previewErrors({ ...emptyPreviewInput(), branch: ' ', healthPath: 'health' });
    expect(Object.keys(errors).sort()).toEqual(['branch', 'healthPath', 'port', 'repository', 'startCommand']);
    expect(errors.repository).toMatch(/repository/);
    expect(errors.startCommand).toMatch(/starts the preview/);
    expect(errors.healthPath).toMatch(/starting with \//);
    expect(firstPreviewError(errors)).toBe('repository');
    expect(firstPreviewError({ port: 'x', startCommand: 'y' })).toBe('startCommand');
    expect(firstPreviewError({})).toBeNull();
    for (const port of ['0', '65536', '30 00', '3e3', '-1', '']) expect(previewErrors(typed({ port })).port, port).toMatch(/1 to 65535/);
    expect(previewErrors(typed({ port: '65535' }))).toEqual({});
    expect(previewErrors(typed({ branch: 'my branch' })).branch).toMatch(/no spaces/);
    expect(previewErrors(typed({ branch: 'refs/heads/main' })).branch).toMatch(/without refs\/heads/);
    expect(previewErrors(typed({ branch: 'a..b' })).branch).toMatch(/git accepts/);
    expect(previewErrors(typed({ branch: 'feature/login-page' }))).toEqual({});
    expect(previewErrors(typed({ repository: 'https://github.com/acme/my shop' })).repository).toMatch(/no spaces/);
    expect(previewErrors(typed({ repository: '--upload-pack=x' })).repository).toMatch(/'-'/);
    expect(previewErrors(typed({ repository: 'git@github.com:acme/shop.git' }))).toEqual({});
    expect(previewErrors(typed({ healthPath: '/health check' })).healthPath).toMatch(/no spaces/);
    // A VM that dials in is opened where the operator exposes it.
    expect(previewErrors(typed({ publicUrl: 'preview.example.com' })).publicUrl).toMatch(/http/);
    expect(previewErrors(typed({ publicUrl: 'https://preview.example.com/' }))).toEqual({});
    expect(putPreviewBody(typed({ publicUrl: ' https://preview.example.com/ ' })).publicUrl).toBe('https://preview.example.com/');
  });

  it('fills from the server, with the defaults while nothing is configured', () => {
    expect(inputOf(config())).toEqual({
      repository: 'acme/shop',
      branch: 'release',
      vmId: 'vm-2',
      workDir: '',
      buildCommand: 'npm ci',
      startCommand: 'npm start',
      port: '3000',
      healthPath: '/health',
      publicUrl: '',
    });
    const none = config({ configured: false, repository: '', branch: '', vmId: null, startCommand: '', port: 0, healthPath: null });
    expect(inputOf(none)).toEqual(emptyPreviewInput());
    // Saving what was loaded, untouched, sends the same configuration back.
    expect(putPreviewBody(inputOf(config()))).toMatchObject({ branch: 'release', vmId: 'vm-2', port: 3000, workDir: null });
  });

  it("offers the caller's VMs, their default first, and keeps another member's VM", () => {
    const mine = [vm('vm-1', 'laptop', true), vm('vm-2', 'build box')];
    expect(vmChoices(mine, '')).toEqual([
      { value: '', label: 'My default VM (laptop)' },
      { value: 'vm-1', label: 'laptop' },
      { value: 'vm-2', label: 'build box' },
    ]);
    expect(vmChoices(null, '')).toEqual([{ value: '', label: 'My default VM' }]);
    expect(vmChoices(mine, 'vm-9').at(-1)).toEqual({ value: 'vm-9', label: "Another member's VM (vm-9)" });
    expect(vmLabel(config(), mine, 'your')).toBe('build box');
    expect(vmLabel(config({ vmId: null }), mine, "Sarah's")).toBe("Sarah's default VM");
    expect(vmLabel(config({ vmId: 'vm-9' }), mine, 'your')).toBe("another member's VM (vm-9)");
  });

  it('makes a relative webhook URL absolute', () => {
    expect(absoluteUrl('/api/webhook/push?team=t1', 'https://covibe.example.com')).toBe('https://covibe.example.com/api/webhook/push?team=t1');
    expect(absoluteUrl('https://hooks.example.com/x', 'https://covibe.example.com')).toBe('https://hooks.example.com/x');
  });
});

describe('the webhook secret panel', () => {
  it('shows a secret once: after the first save or a new one, until dismissed', () => {
    // The first configuration makes the secret.
    const first = secretPanel(null, { type: 'saved', answer: answer('s3cret') });
    expect(first).toEqual({ webhookUrl: 'https://covibe.example.com/api/webhook/push?team=t1', secret: 's3cret', first: true });
    // A later save brings none: a secret not yet dismissed stays, nothing appears otherwise.
    expect(secretPanel(first, { type: 'saved', answer: answer(null) })).toBe(first);
    expect(secretPanel(null, { type: 'saved', answer: answer() })).toBeNull();
    // A new secret replaces the one shown, which no longer works.
    const rotated = secretPanel(first, { type: 'rotated', answer: { webhookUrl: 'https://covibe.example.com/h', webhookSecret: 'n3w' } });
    expect(rotated).toEqual({ webhookUrl: 'https://covibe.example.com/h', secret: 'n3w', first: false });
    // Dismissed, it is gone from the state.
    expect(secretPanel(rotated, { type: 'dismissed' })).toBeNull();
  });
});
