// CoVibe's service worker: caches the app shell only (index.html, /assets/*, the manifest and
// icons) so the app opens without a network. Pages are network-first with the cached shell as the
// offline fallback. It never answers /api/*, /socket.io/* or anything else from a cache: those
// requests are not even looked at (the browser fetches them as if there were no worker).

const CACHE = 'covibe-shell-v1';
const INDEX = '/index.html';
const STATIC = ['/manifest.webmanifest', '/icons/icon.svg', '/icons/icon-192.png', '/icons/icon-512.png', '/icons/icon-maskable-512.png'];

/** The hashed files an index.html loads (scripts, styles, preloads). */
function assetsOf(html) {
  const found = new Set();
  for (const match of html.matchAll(/(?:src|href)="(\/assets\/[^"?#]+)"/g)) found.add(match[1]);
  return [...found];
}

function isShellFile(path) {
  return path.startsWith('/assets/') || path.startsWith('/icons/') || path === '/manifest.webmanifest';
}

/** Stores a fresh index.html and what it loads; drops assets of older builds. */
async function storeShell(cache, response) {
  const html = await response.clone().text();
  const previous = await cache.match(INDEX);
  const changed = !previous || (await previous.text()) !== html;
  await cache.put(INDEX, response);
  if (!changed) return;
  const wanted = new Set(assetsOf(html));
  await Promise.all(
    wanted.size ? [...wanted].map((path) => cache.add(path).catch(() => undefined)) : [],
  );
  // Assets of an older build, unless this build loads them (lazy screens come back when used).
  for (const request of await cache.keys()) {
    const path = new URL(request.url).pathname;
    if (path.startsWith('/assets/') && !wanted.has(path)) await cache.delete(request);
  }
}

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(STATIC).catch(() => undefined);
      const index = await fetch('/', { cache: 'no-cache' });
      if (index.ok) await storeShell(cache, index);
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
      await self.clients.claim();
    })(),
  );
});

async function page(event) {
  const request = event.request;
  try {
    const response = await fetch(request);
    const type = response.headers.get('content-type') || '';
    if (response.ok && type.includes('text/html')) {
      const copy = response.clone();
      event.waitUntil(caches.open(CACHE).then((cache) => storeShell(cache, copy)).catch(() => undefined));
    }
    return response;
  } catch (err) {
    const cached = await caches.match(INDEX);
    if (cached) return cached;
    throw err;
  }
}

async function shellFile(request) {
  const cache = await caches.open(CACHE);
  const cached = await cache.match(request);
  const path = new URL(request.url).pathname;
  // Hashed assets never change; the manifest and icons are refreshed behind the cached copy.
  if (cached && path.startsWith('/assets/')) return cached;
  const fresh = fetch(request).then(async (response) => {
    if (response.ok) await cache.put(request, response.clone());
    return response;
  });
  if (cached) {
    fresh.catch(() => undefined);
    return cached;
  }
  return fresh;
}

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  const path = url.pathname;
  // The API, the socket and the probes: never touched.
  if (path === '/api' || path.startsWith('/api/') || path.startsWith('/socket.io') || path === '/healthz' || path === '/readyz') return;
  if (request.mode === 'navigate') {
    event.respondWith(page(event));
    return;
  }
  if (isShellFile(path)) event.respondWith(shellFile(request));
  // Anything else goes to the network, uncached.
});
