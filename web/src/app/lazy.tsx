// Screens other than the deck load on first use (keeps the initial JS small); the chunks are
// fetched ahead of need once the app is idle, so a later offline moment still has them.

import type { ComponentType, FunctionComponent } from 'preact';
import { useEffect, useState } from 'preact/hooks';

export interface LazyScreen<P> extends FunctionComponent<P> {
  preload: () => Promise<unknown>;
}

export function lazy<P extends object>(load: () => Promise<ComponentType<P>>): LazyScreen<P> {
  let loaded: ComponentType<P> | null = null;
  let pending: Promise<ComponentType<P>> | null = null;
  const preload = () => {
    if (!pending) {
      pending = load().then(
        (component) => (loaded = component),
        (err: unknown) => {
          pending = null;
          throw err;
        },
      );
    }
    return pending;
  };
  const Lazy = (props: P) => {
    const [, setTick] = useState(0);
    const [failed, setFailed] = useState(false);
    useEffect(() => {
      if (loaded) return;
      let live = true;
      preload().then(
        () => live && setTick((n) => n + 1),
        () => live && setFailed(true),
      );
      return () => {
        live = false;
      };
    }, [failed]);
    if (loaded) {
      const Component = loaded;
      return <Component {...props} />;
    }
    if (failed) {
      return (
        <div class="empty" role="alert">
          <p>This screen could not be loaded.</p>
          <button type="button" class="btn" onClick={() => setFailed(false)}>
            Try again
          </button>
        </div>
      );
    }
    return (
      <p class="loading" aria-busy="true">
        Loading…
      </p>
    );
  };
  return Object.assign(Lazy, { preload });
}
