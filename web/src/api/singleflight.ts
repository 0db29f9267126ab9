/**
 * Wraps an async function so that calls made while one is running share its result: a burst of
 * 401s refreshes the token once, not once per request.
 */
export function singleFlight<T>(run: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | null = null;
  return () => {
    if (!running) {
      running = run().finally(() => {
        running = null;
      });
    }
    return running;
  };
}
