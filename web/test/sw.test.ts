// The service worker caches the app shell only and never answers the API or the socket.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import source from '../public/sw.js?raw';

const ORIGIN = 'https://covibe.example';

/** A Cache Storage in memory, keyed by path. */
function memoryCaches() {
  const stores = new Map<string, Map<string, Response>>();
  const keyOf = (r: Request | string) => new URL(typeof r === 'string' ? r : r.url, ORIGIN).pathname;
  const open = async (name: string) => {
    let store = stores.get(name);
    if (!store) stores.set(name, (store = new Map()));
    const s = store;
    return {
      match: async (r: Request | string) => s.get(keyOf(r))?.clone(),
      put: async (r: Request | string, res: Response) => void s.set(keyOf(r), res.clone()),
      add: async (r: string) => void s.set(keyOf(r), new Response(`asset ${r}`)),
      addAll: async (list: string[]) => list.forEach((r) => s.set(keyOf(r), new Response(`file ${r}`))),
      keys: async () => [...s.keys()].map((k) => new Request(ORIGIN + k)),
      delete: async (r: Request | string) => s.delete(keyOf(r)),
    };
  };
  return {
    stores,
    api: {
      open,
      keys: async () => [...stores.keys()],
      delete: async (name: string) => stores.delete(name),
      match: async (r: Request | string) => {
        for (const s of stores.values()) {
          const hit = s.get(keyOf(r));
          if (hit) return hit.clone();
        }
        return undefined;
      },
    },
  };
}

function load(network: (r: Request | string) => Promise<Response>) {
  const listeners = new Map<string, (event: unknown) => void>();
  const self = {
    location: new URL(ORIGIN + '/sw.js'),
    addEventListener: (name: string, fn: (event: unknown) => void) => listeners.set(name, fn),
    skipWaiting: async () => {},
    clients: { claim: async () => {} },
  };
  const caches = memoryCaches();
  new Function('self', 'caches', 'fetch', source)(self, caches.api, network);
  return { listeners, caches };
}

function fetchEvent(path: string, init: { method?: string; mode?: string } = {}) {
  const request = { url: path.startsWith('http') ? path : ORIGIN + path, method: init.method ?? 'GET', mode: init.mode ?? 'cors' };
  const event = { request, respondWith: vi.fn(), waitUntil: vi.fn() };
  return event;
}

describe('service worker', () => {
  let sw: ReturnType<typeof load>;
  let network: ReturnType<typeof vi.fn>;
  beforeEach(() => {
    network = vi.fn(async () => new Response('<html>', { headers: { 'content-type': 'text/html' } }));
    sw = load(network);
  });

  it.each([
    ['/api/agent/list', {}],
    ['/api/chat/history?limit=50', {}],
    ['/api/auth/refresh', { method: 'POST' }],
    ['/socket.io/?EIO=4&transport=polling', {}],
    ['/healthz', {}],
    ['/api/openapi.json', { mode: 'navigate' }],
    ['/some/data.json', {}],
    ['https://elsewhere.example/assets/x.js', {}],
  ])('leaves %s to the network, untouched', (path, init) => {
    const event = fetchEvent(path, init);
    sw.listeners.get('fetch')?.(event);
    expect(event.respondWith).not.toHaveBeenCalled();
  });

  it.each(['/assets/index-abc.js', '/assets/index-abc.css', '/manifest.webmanifest', '/icons/icon-192.png'])(
    'serves the shell file %s',
    (path) => {
      const event = fetchEvent(path);
      sw.listeners.get('fetch')?.(event);
      expect(event.respondWith).toHaveBeenCalled();
    },
  );

  it('installs the shell: index.html and the assets it loads', async () => {
    network.mockImplementation(async () =>
      new Response('<script type="module" src="/assets/index-1.js"></script><link rel="stylesheet" href="/assets/index-1.css">', {
        headers: { 'content-type': 'text/html' },
      }),
    );
    let done: Promise<unknown> = Promise.resolve();
    sw.listeners.get('install')?.({ waitUntil: (p: Promise<unknown>) => (done = p) });
    await done;
    const store = [...sw.caches.stores.values()][0];
    expect([...(store?.keys() ?? [])].sort()).toEqual(
      expect.arrayContaining(['/index.html', '/assets/index-1.js', '/assets/index-1.css', '/manifest.webmanifest']),
    );
    expect([...(store?.keys() ?? [])].some((k) => k.startsWith('/api'))).toBe(false);
  });

  it('answers a page from the network, and offline from the cached shell', async () => {
    let done: Promise<unknown> = Promise.resolve();
    sw.listeners.get('install')?.({ waitUntil: (p: Promise<unknown>) => (done = p) });
    await done;
    const online = fetchEvent('/workshop', { mode: 'navigate' });
    sw.listeners.get('fetch')?.(online);
    const fresh = (await online.respondWith.mock.calls[0]?.[0]) as Response;
    expect(await fresh.text()).toBe('<html>');

    network.mockRejectedValue(new TypeError('Failed to fetch'));
    const offline = fetchEvent('/agents/42', { mode: 'navigate' });
    sw.listeners.get('fetch')?.(offline);
    const cached = (await offline.respondWith.mock.calls[0]?.[0]) as Response;
    expect(await cached.text()).toBe('<html>');
  });
});
