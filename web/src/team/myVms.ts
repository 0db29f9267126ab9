// The caller's VMs as the My VMs card last loaded them: the preview settings pick from them.

import { signal } from '@preact/signals';
import type { VmView } from '../api/types';

export const myVms = signal<VmView[] | null>(null);
