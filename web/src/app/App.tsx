// The app: the sign-in screen while signed out (on every route), else the shell with the
// route's screen. The deck and agent view are in the first bundle; the other screens load on
// first use.

import { effect } from '@preact/signals';
import { useEffect } from 'preact/hooks';
import { AgentScreen } from '../agents/AgentScreen';
import { Deck } from '../agents/Deck';
import { agents } from '../agents/store';
import { session } from '../api/session';
import { SignIn } from '../team/SignIn';
import { lazy } from './lazy';
import { route, screenOf, type Screen } from './route';
import { Shell } from './Shell';

const Workshop = lazy(() => import('../chat/Workshop').then((m) => m.Workshop));
const Showcase = lazy(() => import('../preview/Showcase').then((m) => m.Showcase));
const TeamScreen = lazy(() => import('../team/TeamScreen').then((m) => m.TeamScreen));

const TITLES: Partial<Record<Screen['name'], string>> = {
  deck: 'Command Deck',
  workshop: 'Workshop',
  showcase: 'Showcase',
  team: 'Team',
  missing: 'Not found',
};

function NotFound() {
  return (
    <div class="screen">
      <h1>Nothing here</h1>
      <p class="muted">This page does not exist. Pick a tab below.</p>
    </div>
  );
}

export function App() {
  const signedIn = session.value !== null;
  useEffect(() => {
    if (!signedIn) return;
    // Fetch the other screens while idle, so they open at once (and offline, from the cache).
    const warm = () => [Workshop, Showcase, TeamScreen].forEach((s) => void s.preload().catch(() => {}));
    const idle = window.requestIdleCallback
      ? window.requestIdleCallback(warm, { timeout: 4000 })
      : window.setTimeout(warm, 2000);
    return () => (window.cancelIdleCallback ? window.cancelIdleCallback(idle) : window.clearTimeout(idle));
  }, [signedIn]);

  const screen = screenOf(route.value.path);
  const agentId = screen.name === 'agent' ? screen.id : null;
  useEffect(() => {
    if (!signedIn) return;
    if (agentId === null) {
      document.title = `${TITLES[screen.name] ?? 'CoVibe'} · CoVibe`;
      return;
    }
    // An agent's page is named after its task (as soon as it is known).
    return effect(() => {
      document.title = `${agents.value.get(agentId)?.task ?? 'Agent'} · CoVibe`;
    });
  }, [signedIn, screen.name, agentId]);

  if (!signedIn) return <SignIn />;
  let body;
  switch (screen.name) {
    case 'deck':
      body = <Deck />;
      break;
    case 'agent':
      body = <AgentScreen key={screen.id} id={screen.id} />;
      break;
    case 'workshop':
      body = <Workshop />;
      break;
    case 'showcase':
      body = <Showcase />;
      break;
    case 'team':
      body = <TeamScreen />;
      break;
    default:
      body = <NotFound />;
  }
  return (
    <Shell screen={screen.name} fill={screen.name === 'workshop' || screen.name === 'agent'}>
      {body}
    </Shell>
  );
}
