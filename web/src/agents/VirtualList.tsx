// A virtualised list of rows with measured heights (@tanstack/virtual-core): only the visible
// rows are in the DOM, so 50,000 lines scroll as smoothly as 50. It sticks to the bottom while the
// reader is there and keeps the reader's place otherwise, offering "Jump to latest" when lines
// arrive below.

import {
  Virtualizer,
  elementScroll,
  observeElementOffset,
  observeElementRect,
} from '@tanstack/virtual-core';
import type { ComponentChildren } from 'preact';
import { useLayoutEffect, useReducer, useRef, useState } from 'preact/hooks';

interface Props {
  count: number;
  /** A stable key per index (rows keep their measured height under it). */
  itemKey: (index: number) => string | number;
  /** Extra attributes of a row (e.g. data-seq). */
  rowAttrs?: (index: number) => Record<string, string | number>;
  renderRow: (index: number) => ComponentChildren;
  estimate: number;
  label: string;
  role?: preact.AriaRole;
  class?: string;
  /** Changes when the rows' layout changes wholesale (e.g. another rendering). */
  layout?: string;
  empty?: ComponentChildren;
}

/** How near the end (px) still counts as being at it. */
const AT_END = 48;

export function VirtualList(props: Props) {
  const scrollRef = useRef<HTMLDivElement>(null);
  const [, rerender] = useReducer((n: number) => n + 1, 0);
  const [below, setBelow] = useState(false);
  const state = useRef({ count: props.count, layout: props.layout, atEnd: true });
  // Whether the reader's own scrolling left them at the end: what a shrinking viewport or new
  // rows are judged by, never the virtualizer's view of a layout it has not caught up with.
  const pinned = useRef(true);
  const vRef = useRef<Virtualizer<HTMLDivElement, HTMLDivElement> | null>(null);

  const options = {
    count: props.count,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => props.estimate,
    getItemKey: props.itemKey,
    overscan: 6,
    anchorTo: 'end' as const,
    followOnAppend: true,
    scrollEndThreshold: AT_END,
    observeElementRect,
    observeElementOffset,
    scrollToFn: elementScroll,
    onChange: (v: Virtualizer<HTMLDivElement, HTMLDivElement>) => {
      const atEnd = v.isAtEnd(AT_END);
      if (atEnd !== state.current.atEnd) {
        state.current.atEnd = atEnd;
        if (atEnd) setBelow(false);
      }
      rerender(0);
    },
  };
  if (!vRef.current) vRef.current = new Virtualizer(options);
  const v = vRef.current;
  v.setOptions(options);

  const s = state.current;
  /** To the end, as the DOM has it now, and again once the new rows are measured. */
  const toEnd = () => {
    const el = scrollRef.current;
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    requestAnimationFrame(() => {
      if (pinned.current) el.scrollTop = el.scrollHeight;
    });
  };

  // New rows: followed by a reader at the end; one up the list is told.
  useLayoutEffect(() => {
    if (props.count > s.count) {
      if (pinned.current) toEnd();
      else if (!s.atEnd) setBelow(true);
    }
    s.count = props.count;
  }, [props.count]);

  useLayoutEffect(() => v._didMount(), [v]);
  useLayoutEffect(() => {
    v._willUpdate();
  });

  // A viewport that shrinks (a card or the keyboard below the list) keeps a reader who was at
  // the end there; where the reader was is what their scrolling left, not what the shrink did.
  // It scrolls the element itself: the virtualizer may not have measured the new viewport yet,
  // and its end would then be the old one's.
  useLayoutEffect(() => {
    const el = scrollRef.current;
    if (!el || typeof ResizeObserver === 'undefined') return;
    let height = el.clientHeight;
    const onScroll = () => {
      pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight <= AT_END;
    };
    const resized = new ResizeObserver(() => {
      if (el.clientHeight < height && pinned.current) toEnd();
      height = el.clientHeight;
    });
    el.addEventListener('scroll', onScroll, { passive: true });
    resized.observe(el);
    return () => {
      resized.disconnect();
      el.removeEventListener('scroll', onScroll);
    };
  }, [v]);

  // Another rendering of the rows: forget their heights, keep the reader's place.
  useLayoutEffect(() => {
    if (s.layout === props.layout) return;
    s.layout = props.layout;
    const first = v.range?.startIndex ?? 0;
    const wasAtEnd = s.atEnd;
    v.measure();
    if (wasAtEnd) v.scrollToEnd();
    else v.scrollToIndex(first, { align: 'start' });
  }, [props.layout]);

  const items = v.getVirtualItems();
  const top = items[0]?.start ?? 0;
  return (
    <div class={`vlist-wrap ${props.class ?? ''}`}>
      <div
        ref={scrollRef}
        class="vlist"
        role={props.role}
        aria-label={props.label}
        tabIndex={0}
      >
        {props.count === 0 && props.empty}
        <div class="vlist-space" style={{ height: `${v.getTotalSize()}px` }}>
          <div class="vlist-rows" style={{ transform: `translateY(${top}px)` }}>
            {items.map((item) => (
              <div
                key={item.key}
                class="vrow"
                data-index={item.index}
                ref={v.measureElement}
                {...props.rowAttrs?.(item.index)}
              >
                {props.renderRow(item.index)}
              </div>
            ))}
          </div>
        </div>
      </div>
      {below && (
        <button
          type="button"
          class="btn btn-primary btn-small jump-latest"
          onClick={() => {
            setBelow(false);
            pinned.current = true;
            v.scrollToEnd();
          }}
        >
          Jump to latest ↓
        </button>
      )}
    </div>
  );
}
