// The team's members as the Team screen last loaded them: the VM audit log names actors by them.

import { signal } from '@preact/signals';
import type { User } from '../api/types';

export const members = signal<User[] | null>(null);

/** A member's display name by id, while the list is loaded. */
export function memberName(id: string): string | undefined {
  return members.value?.find((m) => m.id === id)?.displayName;
}
