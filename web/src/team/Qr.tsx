// A QR code as SVG rectangles (from qrcode-generator's module matrix, never an HTML string).

import qrcode from 'qrcode-generator';
import { useMemo } from 'preact/hooks';

/** Dark modules as horizontal runs: one rect per run keeps the DOM small. */
export function qrRuns(payload: string): { size: number; runs: Array<[number, number, number]> } {
  const qr = qrcode(0, 'M');
  qr.addData(payload);
  qr.make();
  const size = qr.getModuleCount();
  const runs: Array<[number, number, number]> = [];
  for (let row = 0; row < size; row++) {
    let start = -1;
    for (let col = 0; col <= size; col++) {
      const dark = col < size && qr.isDark(row, col);
      if (dark && start < 0) start = col;
      if (!dark && start >= 0) {
        runs.push([start, row, col - start]);
        start = -1;
      }
    }
  }
  return { size, runs };
}

const QUIET = 4;

export function Qr({ payload }: { payload: string }) {
  const { size, runs } = useMemo(() => qrRuns(payload), [payload]);
  const total = size + QUIET * 2;
  return (
    <svg
      class="qr"
      role="img"
      aria-label="QR code"
      viewBox={`0 0 ${total} ${total}`}
      shape-rendering="crispEdges"
      xmlns="http://www.w3.org/2000/svg"
    >
      <rect width={total} height={total} fill="#fff" />
      {runs.map(([x, y, w]) => (
        <rect key={`${x},${y}`} x={x + QUIET} y={y + QUIET} width={w} height={1} fill="#000" />
      ))}
    </svg>
  );
}
