// Matches over time as SVG bars; dragging across it picks a narrower [start, end).
const NS = "http://www.w3.org/2000/svg";
const W = 1000;
const H = 120;
const AXIS = 18;
const HEAD = 16; // the band above the bars that holds the scale note

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function label(ms, span) {
  const iso = new Date(ms).toISOString();
  if (span < 60_000) return iso.slice(11, 23);
  if (span < 86_400_000) return iso.slice(11, 19);
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
}

// A bucket's width for the scale note: "5 min", "1 h", "250 ms".
function width(ms) {
  const units = [
    [86_400_000, "d"],
    [3_600_000, "h"],
    [60_000, "min"],
    [1000, "s"],
  ];
  for (const [size, name] of units) if (ms >= size && ms % size === 0) return `${ms / size} ${name}`;
  return `${ms} ms`;
}

// svg: the #histogram element; data: /search/histogram's answer; onZoom(startMs, endMs).
export function drawHistogram(svg, data, onZoom) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const buckets = data.buckets || [];
  svg.dataset.buckets = String(buckets.length);
  if (!buckets.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, svg).textContent =
      "no matches in this range";
    return;
  }
  const lo = buckets[0].start_ms;
  const hi = buckets[buckets.length - 1].start_ms + data.interval_ms;
  const span = hi - lo;
  const top = Math.max(...buckets.map((b) => b.count), 1);
  const plot = H - AXIS;
  const x = (ms) => ((ms - lo) / span) * W;
  svg.dataset.startMs = String(lo);
  svg.dataset.endMs = String(hi);
  for (const b of buckets) {
    if (!b.count) continue;
    const h = Math.max((b.count / top) * (plot - HEAD), 1);
    const bar = el(
      "rect",
      {
        class: "bar",
        x: x(b.start_ms),
        y: plot - h,
        width: Math.max(x(b.start_ms + data.interval_ms) - x(b.start_ms) - 1, 1),
        height: h,
      },
      svg,
    );
    el("title", {}, bar).textContent = `${b.start}: ${b.count}`;
  }
  el("line", { x1: 0, x2: W, y1: plot, y2: plot, class: "axisline" }, svg);
  // Bars are scaled to the tallest: without this note equal buckets would read as "a lot".
  const scale = el("text", { x: 4, y: 12, class: "axis scale" }, svg);
  scale.textContent = `peak ${top.toLocaleString("en")} per ${width(data.interval_ms)}`;
  svg.dataset.peak = String(top);
  for (let i = 0; i <= 4; i++) {
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    const at = (i / 4) * W;
    const tick = el("text", { x: at, y: H - 4, "text-anchor": anchor, class: "axis" }, svg);
    tick.textContent = label(lo + (i / 4) * span, span);
  }
  const sel = el("rect", { class: "selection", x: 0, y: 0, width: 0, height: plot }, svg);
  sel.style.display = "none";

  const toX = (ev) => {
    const r = svg.getBoundingClientRect();
    return Math.min(Math.max(((ev.clientX - r.left) / r.width) * W, 0), W);
  };
  let from = null;
  svg.onpointerdown = (ev) => {
    from = toX(ev);
    svg.setPointerCapture?.(ev.pointerId);
    sel.style.display = "";
    sel.setAttribute("x", from);
    sel.setAttribute("width", 0);
    ev.preventDefault();
  };
  svg.onpointermove = (ev) => {
    if (from === null) return;
    const to = toX(ev);
    sel.setAttribute("x", Math.min(from, to));
    sel.setAttribute("width", Math.abs(to - from));
  };
  svg.onpointerup = (ev) => {
    if (from === null) return;
    const to = toX(ev);
    const [a, b] = [Math.min(from, to), Math.max(from, to)];
    from = null;
    sel.style.display = "none";
    if (b - a < 3) return; // a click, not a drag
    const startMs = Math.floor(lo + (a / W) * span);
    const endMs = Math.ceil(lo + (b / W) * span);
    if (endMs > startMs) onZoom(startMs, endMs);
  };
}
