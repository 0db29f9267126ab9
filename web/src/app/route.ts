// The app's routes, on the history API (no hash): `/`, `/agents/<id>`, `/workshop`, `/showcase`,
// `/team`.

import { signal } from '@preact/signals';

export interface Route {
  path: string;
  params: URLSearchParams;
}

function current(): Route {
  if (typeof location === 'undefined') return { path: '/', params: new URLSearchParams() };
  return { path: location.pathname, params: new URLSearchParams(location.search) };
}

export const route = signal<Route>(current());

/** Goes to an in-app path (with its query, if any), adding a history entry. */
export function navigate(path: string, options: { replace?: boolean } = {}): void {
  const target = new URL(path, location.href);
  if (target.origin !== location.origin) {
    location.assign(target.href);
    return;
  }
  const next = target.pathname + target.search + target.hash;
  if (next !== location.pathname + location.search + location.hash) {
    if (options.replace) history.replaceState(null, '', next);
    else history.pushState(null, '', next);
  }
  route.value = current();
  // The shell's <main> is what scrolls.
  if (!options.replace) document.getElementById('main')?.scrollTo(0, 0);
}

if (typeof window !== 'undefined') {
  window.addEventListener('popstate', () => {
    route.value = current();
  });
}

/**
 * For an in-app <a>: navigates without a page load, unless the member asked for a new tab or
 * window (modifier keys, middle button).
 */
export function followLink(event: MouseEvent): void {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const anchor = event.currentTarget as HTMLAnchorElement | null;
  if (!anchor || (anchor.target && anchor.target !== '_self')) return;
  const href = anchor.getAttribute('href');
  if (!href || new URL(anchor.href).origin !== location.origin) return;
  event.preventDefault();
  navigate(href);
}

export type Screen =
  | { name: 'deck' }
  | { name: 'agent'; id: string }
  | { name: 'workshop' }
  | { name: 'showcase' }
  | { name: 'team' }
  | { name: 'missing' };

/** Which screen a path shows. */
export function screenOf(path: string): Screen {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, '') : path;
  if (trimmed === '/' || trimmed === '') return { name: 'deck' };
  if (trimmed === '/workshop') return { name: 'workshop' };
  if (trimmed === '/showcase') return { name: 'showcase' };
  if (trimmed === '/team') return { name: 'team' };
  const agent = /^\/agents\/([^/]+)$/.exec(trimmed);
  if (agent?.[1]) {
    try {
      return { name: 'agent', id: decodeURIComponent(agent[1]) };
    } catch {
      return { name: 'missing' };
    }
  }
  return { name: 'missing' };
}
