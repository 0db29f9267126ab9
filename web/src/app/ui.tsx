// Small pieces the screens share.

import { useEffect, useRef, useState } from 'preact/hooks';

/** Copies `text`; says so for a moment (and to screen readers). */
export function CopyButton({ text, label = 'Copy' }: { text: string; label?: string }) {
  const [state, setState] = useState<'idle' | 'copied' | 'failed'>('idle');
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setState('copied');
    } catch {
      setState('failed');
    }
    setTimeout(() => setState('idle'), 2000);
  };
  return (
    <button type="button" class="btn btn-small" onClick={copy}>
      {state === 'copied' ? 'Copied' : state === 'failed' ? 'Select and copy' : label}
      <span class="sr-only" role="status">
        {state === 'copied' ? 'Copied to the clipboard' : ''}
      </span>
    </button>
  );
}

/** An error line, announced when it appears. */
export function ErrorText({ error }: { error: string | null | undefined }) {
  return (
    <p role="alert" class="alert">
      {error ?? ''}
    </p>
  );
}

/** Focus for a control that replaces the one just pressed (else focus falls to the page). */
export function useFocusOnMount<T extends HTMLElement>() {
  const ref = useRef<T>(null);
  useEffect(() => ref.current?.focus(), []);
  return ref;
}

/**
 * Focus for an element the next render shows, or keeps, when the one focused goes away: call it
 * with the element's ref in the handler that hides the focused one.
 */
export function useFocusAfterRender() {
  const [target, setTarget] = useState<{ ref: { current: HTMLElement | null } } | null>(null);
  useEffect(() => target?.ref.current?.focus(), [target]);
  return (ref: { current: HTMLElement | null }) => setTarget({ ref });
}
