// When the deploy history is read again: once a burst of events has settled (one read for a
// deploy's several announcements), never two reads at once, and once more after a read when
// something happened while it was on its way.

export interface Refresh {
  /** Something changed: read again once nothing more has for `delayMs`. */
  soon(): void;
  /** Read again now (the screen opened, the member asked). */
  now(): void;
  /** Forget anything waiting (signed out, another team). */
  cancel(): void;
}

export function refresher(read: () => Promise<void>, delayMs: number): Refresh {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  let again = false;

  const run = async () => {
    clearTimeout(timer);
    timer = undefined;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await read();
    } catch {
      // The read reports its own failure; the next event or visit tries again.
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      void run();
    }
  };

  return {
    soon() {
      clearTimeout(timer);
      timer = setTimeout(() => void run(), delayMs);
    },
    now() {
      void run();
    },
    cancel() {
      clearTimeout(timer);
      timer = undefined;
      again = false;
    },
  };
}
