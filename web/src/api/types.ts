// Names for the API's JSON shapes, all from the generated schema (never copied by hand).

import type { components } from './schema.gen';

type Schemas = components['schemas'];

export type Team = Schemas['Team'];
export type User = Schemas['User'];
export type Role = Schemas['RoleName'];
export type ApiSession = Schemas['Session'];
export type TokenPair = Schemas['TokenPair'];
export type SessionInfo = Schemas['SessionInfo'];
export type InviteInfo = Schemas['InviteInfo'];
export type NewInvite = Schemas['NewInvite'];
export type SignInCode = Schemas['SignInCode'];
export type VmView = Schemas['VmView'];
export type RegisterVm = Schemas['RegisterVm'];
export type UpdateVm = Schemas['UpdateVm'];
export type ReplaceVmCredential = Schemas['ReplaceVmCredential'];
export type AcceptHostKey = Schemas['AcceptHostKey'];
export type AuditEntry = Schemas['AuditEntry'];
export type AuditPage = Schemas['AuditPage'];
export type PresenceName = Schemas['PresenceName'];
export type PolicyRules = Schemas['PolicyRules'];
export type PolicyView = Schemas['PolicyView'];

export type ChatMessage = Schemas['ChatMessageView'];
export type PresenceUser = Schemas['PresenceUserView'];

export type PreviewView = Schemas['PreviewView'];
export type PreviewConfigView = Schemas['PreviewConfigView'];
export type PreviewConfigEnvelope = Schemas['PreviewConfigEnvelope'];
export type PutPreviewConfig = Schemas['PutPreviewConfig'];
export type PutPreviewConfigAnswer = Schemas['PutPreviewConfigAnswer'];
export type DeploymentView = Schemas['DeploymentView'];
export type WebhookSecret = Schemas['WebhookSecret'];
