// Inline icons (decorative: their links and buttons carry the words).

const common = {
  viewBox: '0 0 24 24',
  fill: 'none',
  stroke: 'currentColor',
  'stroke-width': 2,
  'stroke-linecap': 'round',
  'stroke-linejoin': 'round',
  'aria-hidden': 'true',
  focusable: 'false',
} as const;

export const DeckIcon = () => (
  <svg {...common}>
    <rect x="3" y="4" width="18" height="6" rx="2" />
    <rect x="3" y="14" width="18" height="6" rx="2" />
    <path d="M7 7h.01M7 17h.01" />
  </svg>
);

export const ChatIcon = () => (
  <svg {...common}>
    <path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.4A8 8 0 1 1 21 12z" />
  </svg>
);

export const ShowcaseIcon = () => (
  <svg {...common}>
    <rect x="3" y="4" width="18" height="13" rx="2" />
    <path d="M8 21h8M12 17v4" />
  </svg>
);

export const TeamIcon = () => (
  <svg {...common}>
    <circle cx="9" cy="8" r="3.5" />
    <path d="M2.5 20a6.5 6.5 0 0 1 13 0" />
    <path d="M16 4.5a3.5 3.5 0 0 1 0 7M18 14.5a6.5 6.5 0 0 1 3.5 5.5" />
  </svg>
);

/** The CoVibe mark (the app icon's two rings). */
export const Mark = ({ class: className }: { class?: string }) => (
  <svg viewBox="0 0 512 512" class={className} aria-hidden="true" focusable="false">
    <rect width="512" height="512" rx="112" fill="#0f172a" />
    <circle cx="206" cy="256" r="110" fill="none" stroke="#38bdf8" stroke-width="44" />
    <circle cx="306" cy="256" r="110" fill="none" stroke="#a78bfa" stroke-width="44" stroke-opacity="0.9" />
  </svg>
);
