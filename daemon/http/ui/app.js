// The landing page: for each watched process its outstanding bytes over time and a flame graph
// of what its stacks hold, and the leak detector's current suspects, drawn as SVG from the
// daemon's own API. Every name shown comes from watched processes: it is set as text, never
// parsed as HTML.
"use strict";

const REFRESH_MS = 5000;
const FLAME_STACKS = 200;  // stacks per process drawn in its flame graph
const ROW = 17;            // px per flame graph level
const SVG_NS = "http://www.w3.org/2000/svg";

const zoomed = new Map();  // pid -> path of frame names the flame graph is zoomed into

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Math.abs(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (n < 0 ? "-" : "") + (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
}

function duration(s) {
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

// --- outstanding bytes over time -----------------------------------------------------------

function drawChart(box, points) {
  box.replaceChildren();
  const width = Math.max(box.clientWidth, 300), height = 120, left = 70, bottom = 18;
  const s = svg("svg", {class: "chart", width, height, viewBox: `0 0 ${width} ${height}`});
  box.appendChild(s);
  if (points.length === 0) {
    s.appendChild(svg("text", {x: left, y: 40}, "no samples yet"));
    return;
  }
  const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1);
  const max = Math.max(1, ...points.map(p => p[1]));
  const x = t => left + (t - t0) / (t1 - t0) * (width - left - 10);
  const y = v => 8 + (1 - v / max) * (height - bottom - 8);
  const line = points.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  s.appendChild(svg("polygon", {class: "area",
    points: `${x(t0)},${y(0)} ${line} ${x(points[points.length - 1][0])},${y(0)}`}));
  s.appendChild(svg("polyline", {class: "line", points: line}));
  s.appendChild(svg("line", {class: "axis", x1: left, y1: y(0), x2: width - 10, y2: y(0)}));
  s.appendChild(svg("line", {class: "axis", x1: left, y1: 8, x2: left, y2: y(0)}));
  s.appendChild(svg("text", {x: left - 6, y: 14, "text-anchor": "end"}, bytes(max)));
  s.appendChild(svg("text", {x: left - 6, y: y(0), "text-anchor": "end"}, "0"));
  s.appendChild(svg("text", {x: left, y: height - 4}, `${duration(t1 - t0)} ago`));
  s.appendChild(svg("text", {x: width - 10, y: height - 4, "text-anchor": "end"}, "now"));
}

// --- flame graph of outstanding bytes ------------------------------------------------------

// A frame's names, outermost first: its own function, then what was inlined into it.
function frameNames(f) {
  const own = f.symbol || `${(f.module || "[unknown]").split("/").pop()}+${f.module_offset}`;
  const inlined = (f.inlined || []).map(i => i.function || "[inlined]").reverse();
  return [own, ...inlined];
}

function flameTree(stacks) {
  const root = {name: "all", value: 0, children: new Map()};
  for (const s of stacks) {
    const v = s.outstanding_bytes;
    if (v <= 0) continue;
    root.value += v;
    let node = root;
    for (let i = s.frames.length - 1; i >= 0; i--) {
      for (const name of frameNames(s.frames[i])) {
        let child = node.children.get(name);
        if (!child) node.children.set(name, child = {name, value: 0, children: new Map()});
        child.value += v;
        node = child;
      }
    }
  }
  return root;
}

function depth(node) {
  let d = 0;
  for (const c of node.children.values()) d = Math.max(d, depth(c));
  return d + 1;
}

function hue(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return `hsl(${10 + h % 45}, ${70 + h % 20}%, ${55 + h % 12}%)`;
}

function drawFlame(box, pid, stacks) {
  box.replaceChildren();
  const full = flameTree(stacks);
  if (full.value === 0) {
    box.appendChild(el("p", {class: "empty"}, "No stack holds memory now."));
    return;
  }
  // The zoomed-into frame, if it still exists; the path above it stays drawn at full width.
  const path = zoomed.get(pid) || [];
  const chain = [full];
  for (const name of path) {
    const next = chain[chain.length - 1].children.get(name);
    if (!next) break;
    chain.push(next);
  }
  const focus = chain[chain.length - 1];
  const levels = chain.length - 1 + depth(focus);
  const width = Math.max(box.clientWidth, 300), height = levels * ROW + 2;
  const s = svg("svg", {class: "flame", width, height, viewBox: `0 0 ${width} ${height}`});
  box.appendChild(s);
  const total = full.value;
  const draw = (node, level, x, w, names) => {
    if (w < 0.5) return;
    const g = svg("g", {class: "frame"});
    const yTop = height - (level + 1) * ROW;
    const pct = (100 * node.value / total).toFixed(1);
    g.appendChild(svg("title", {}, `${node.name}\n${bytes(node.value)} (${pct}%)`));
    g.appendChild(svg("rect", {x: x.toFixed(1), y: yTop, width: Math.max(w - 0.5, 0.5).toFixed(1),
      height: ROW - 1, rx: 2, fill: level === 0 ? "#c8c8c8" : hue(node.name)}));
    const chars = Math.floor((w - 6) / 6.5);
    if (chars >= 3) {
      const label = node.name.length > chars ? node.name.slice(0, chars - 1) + "…" : node.name;
      g.appendChild(svg("text", {x: x + 3, y: yTop + ROW - 5}, label));
    }
    g.addEventListener("click", () => { zoomed.set(pid, names); refresh(); });
    s.appendChild(g);
  };
  // The chain down to the focus, each at full width, then the focus's subtree.
  chain.forEach((node, level) => draw(node, level, 0, width, path.slice(0, level)));
  const walk = (node, level, x, w, names) => {
    let cx = x;
    for (const child of [...node.children.values()].sort((a, b) => b.value - a.value)) {
      const cw = w * child.value / node.value;
      const childNames = [...names, child.name];
      draw(child, level + 1, cx, cw, childNames);
      if (cw >= 0.5) walk(child, level + 1, cx, cw, childNames);
      cx += cw;
    }
  };
  walk(focus, chain.length - 1, 0, width, path.slice(0, chain.length - 1));
}

// --- the page ------------------------------------------------------------------------------

function followsMemory(p) {
  return (p.tracking === "watch" || p.tracking === "escalated") && p.memory;
}

// The stacks the flame graph draws: those of the allocator probes when they hold anything;
// else, in the watch tier, the stacks that first touched the memory still held (sampled).
function flameStacks(box, stacks) {
  const probed = (stacks.stacks || []).filter(s => s.outstanding_bytes > 0);
  const touched = (stacks.growth_stacks || []).filter(s => s.resident_bytes > 0);
  const caption = box.querySelector(".flame-caption");
  if (probed.length || !touched.length) {
    caption.textContent = "Outstanding bytes by stack (flame graph: callers below, allocator " +
                          "on top; click to zoom)";
    return probed;
  }
  caption.textContent = "Memory still held by the stack that first touched it (watch tier: " +
                        "sampled page faults; flame graph, callers below; click to zoom)";
  return touched.map(s => ({...s, outstanding_bytes: s.resident_bytes}));
}

function processBox(p) {
  const id = `process-${p.pid}`;
  let box = document.getElementById(id);
  if (!box) {
    box = el("div", {class: "process", id, "data-pid": p.pid});
    box.appendChild(el("h3"));
    box.appendChild(el("div", {class: "figures"}));
    box.appendChild(el("div", {class: "caption chart-caption"}));
    box.appendChild(el("div", {class: "chart-box"}));
    box.appendChild(el("div", {class: "caption flame-caption"}));
    box.appendChild(el("div", {class: "flame-box"}));
    document.getElementById("processes").appendChild(box);
  }
  box.querySelector("h3").textContent = `${p.watch} · ${p.comm} (pid ${p.pid})`;
  const figures = box.querySelector(".figures");
  figures.replaceChildren();
  // The watch tier has no allocator probe: its series is the kernel's count of the process's
  // memory (escalated too: the probes only name the stacks), as the history records it.
  const memory = followsMemory(p);
  if (memory)
    figures.append(`${bytes(p.memory.anon_bytes + p.memory.swap_bytes)} of anonymous memory ` +
                   `and swap (tracking: ${p.tracking}), growing ` +
                   `${bytes(p.growth_bytes_per_second)}/s `);
  else
    figures.append(`${bytes(p.outstanding_bytes)} outstanding in ${p.outstanding_allocations} ` +
                   `allocations, ${p.stacks} stacks, growing ${bytes(p.growth_bytes_per_second)}/s `);
  box.querySelector(".chart-caption").textContent =
    memory ? "Anonymous memory and swap over time" : "Outstanding bytes over time";
  if (p.leak_suspected) figures.appendChild(el("span", {class: "suspected"}, "leak suspected"));
  figures.appendChild(el("a", {href: `/api/v1/pprof?pid=${p.pid}`}, "pprof"));
  figures.appendChild(el("a", {href: `/api/v1/folded?pid=${p.pid}`}, "folded stacks"));
  figures.appendChild(el("a", {href: `/api/v1/stacks?pid=${p.pid}&top=20`}, "stacks (JSON)"));
  return box;
}

function drawLeaks(leaks) {
  const table = document.getElementById("leak-table");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const l of leaks) {
    const tr = el("tr", {class: "flagged"});
    tr.appendChild(el("td", {}, l.watch));
    tr.appendChild(el("td", {}, l.pid ? `${l.comm} (${l.pid})` : "kernel"));
    tr.appendChild(el("td", {}, l.scope));
    tr.appendChild(el("td", {}, l.site || "(whole process)"));
    tr.appendChild(el("td", {class: "num"}, `${bytes(l.growth_bytes_per_second)}/s`));
    tr.appendChild(el("td", {class: "num"}, bytes(l.outstanding_bytes)));
    tr.appendChild(el("td", {class: "num"}, duration(l.flagged_for_seconds)));
    body.appendChild(tr);
  }
  table.hidden = leaks.length === 0;
  document.getElementById("no-leaks").hidden = leaks.length !== 0;
}

let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  const status = document.getElementById("status");
  try {
    const [{processes}, {leaks}] = await Promise.all([api("/api/v1/processes"),
                                                      api("/api/v1/leaks")]);
    drawLeaks(leaks);
    document.getElementById("no-processes").hidden = processes.length !== 0;
    const live = new Set(processes.map(p => `process-${p.pid}`));
    for (const box of document.querySelectorAll(".process"))
      if (!live.has(box.id)) box.remove();
    for (const p of processes) {
      const box = processBox(p);
      const [history, stacks] = await Promise.all([
        api(`/api/v1/history?pid=${p.pid}`).catch(() => ({outstanding_bytes: []})),
        api(`/api/v1/stacks?pid=${p.pid}&top=${FLAME_STACKS}`).catch(() => ({stacks: []}))]);
      drawChart(box.querySelector(".chart-box"), history.outstanding_bytes);
      drawFlame(box.querySelector(".flame-box"), p.pid, flameStacks(box, stacks));
    }
    status.textContent = `${processes.length} processes watched, ${leaks.length} suspected ` +
                         `leaks; updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "1";
  } catch (e) {
    status.textContent = `Cannot read the API: ${e.message}`;
  } finally {
    refreshing = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
