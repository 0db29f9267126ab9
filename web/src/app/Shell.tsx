// The signed-in frame: header with the team, the connection banner, the main nav (a bottom tab
// bar on phones, a side rail on wide screens) and the screen.

import type { ComponentChildren, JSX } from 'preact';
import { session } from '../api/session';
import { approvalCount } from '../approvals/Approvals';
import { unread } from '../chat/store';
import { realtime } from '../realtime/socket';
import { ChatIcon, DeckIcon, Mark, ShowcaseIcon, TeamIcon } from './icons';
import { followLink, type Screen } from './route';

interface Tab {
  href: string;
  label: string;
  icon: () => JSX.Element;
  screens: Array<Screen['name']>;
}

const TABS: Tab[] = [
  { href: '/', label: 'Command Deck', icon: DeckIcon, screens: ['deck', 'agent'] },
  { href: '/workshop', label: 'Workshop', icon: ChatIcon, screens: ['workshop'] },
  { href: '/showcase', label: 'Showcase', icon: ShowcaseIcon, screens: ['showcase'] },
  { href: '/team', label: 'Team', icon: TeamIcon, screens: ['team'] },
];

export function Shell({ screen, fill, children }: { screen: Screen['name']; fill: boolean; children: ComponentChildren }) {
  const s = session.value;
  const state = realtime.connection.value;
  const unreadCount = unread.value;
  const waitingOnMe = approvalCount();
  return (
    <div class="shell">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <div class="brand">
          <Mark class="brand-mark" />
          <span class="team-name">{s?.team.name}</span>
        </div>
        <div class="topbar-user">
          <span class="conn-dot" data-state={state} aria-hidden="true" />
          <span>{s?.user.displayName}</span>
        </div>
      </header>
      <div class="conn-banner" role="status">
        {realtime.bannerText()}
      </div>
      <nav class="tabbar" aria-label="Main">
        <ul>
          {TABS.map((tab) => {
            const current = tab.screens.includes(screen);
            const Icon = tab.icon;
            return (
              <li key={tab.href}>
                <a class="tab" href={tab.href} onClick={followLink} aria-current={current ? 'page' : undefined}>
                  <Icon />
                  <span>{tab.label}</span>
                  {tab.href === '/' && waitingOnMe > 0 && screen !== 'deck' && (
                    <span class="tab-badge tab-badge-approval" title="Waiting for your approval" aria-hidden="true">
                      {waitingOnMe > 99 ? '99+' : waitingOnMe}
                    </span>
                  )}
                  {tab.href === '/workshop' && unreadCount > 0 && !current && (
                    <span class="tab-badge" aria-hidden="true">
                      {unreadCount > 99 ? '99+' : unreadCount}
                    </span>
                  )}
                </a>
              </li>
            );
          })}
        </ul>
      </nav>
      <main id="main" class={fill ? 'fill' : undefined} tabIndex={0}>
        {children}
      </main>
    </div>
  );
}
