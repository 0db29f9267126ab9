// Start-up: the stored session (if any), the live connection, the app; the service worker in
// production builds only (a dev server's modules must never come from a cache).

import { render } from 'preact';
import './app/styles.css';
import { loadMe } from './api/client';
import { restoreSession, session } from './api/session';
import { App } from './app/App';
import { startChat } from './chat/store';
import { startDeploys } from './preview/history';
import { startPreview } from './preview/store';
import { startRealtime } from './realtime/socket';

restoreSession();
startRealtime();
startChat();
startPreview();
startDeploys();
if (session.value) void loadMe().catch(() => {});

const root = document.getElementById('app');
if (root) render(<App />, root);

if (import.meta.env.PROD && 'serviceWorker' in navigator) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((err: unknown) => {
      console.warn('service worker not registered', err);
    });
  });
}
