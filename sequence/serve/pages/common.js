// Shared by the class and student pages: drawing one source's tile from its window lines.
"use strict";
const LEVELS = ["very low", "low", "high", "very high"];
const TIMELINE_WINDOWS = 180; // lines drawn in a tile's timeline: three minutes of one-second windows
const COLOURS = { Engagement: "#2b8a3e", Boredom: "#868e96", Confusion: "#e67700", Frustration: "#c92a2a" };

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

class Tile {
  constructor(parent, source) {
    this.id = source.id;
    this.lines = [];
    this.root = el("section", { class: "tile", "data-source-id": source.id });
    this.title = el("h2");
    this.badge = el("span", { class: "badge" });
    this.meta = el("p", { class: "meta" });
    this.states = el("div", { class: "states" });
    this.canvas = el("canvas", { width: 320, height: 90, class: "timeline" });
    this.root.append(this.title, this.badge, this.meta, this.states, this.canvas);
    parent.append(this.root);
    this.update(source);
    for (const line of source.recent || []) this.add(line, false);
    if (source.latest && !(source.recent || []).length) this.add(source.latest, false);
    this.draw();
  }

  update(source) {
    this.source = source;
    this.title.textContent = source.name || source.source;
    this.root.dataset.status = source.status;
    this.badge.textContent = source.status + (source.reason && source.status !== "running" ? ": " + source.reason : "");
    this.badge.className = "badge " + source.status;
    this.meta.textContent = `${source.frames} frames, ${source.dropped} dropped, ${source.windows} windows`;
  }

  add(line, redraw = true) {
    this.lines.push(line);
    if (this.lines.length > TIMELINE_WINDOWS) this.lines.shift();
    this.showStates(line);
    if (redraw) this.draw();
  }

  showStates(line) {
    this.states.replaceChildren();
    for (const [state, value] of Object.entries(line.states)) {
      const row = el("div", { class: "state", "data-state": state, "data-level": value ? value.level : "" });
      row.append(el("span", { class: "name" }, state));
      if (!value) {
        row.append(el("span", { class: "level none" }, "no face"));
      } else {
        row.append(el("span", { class: "level" }, `${value.level} ${LEVELS[value.level]}`));
        const bars = el("span", { class: "bars" });
        value.probs.forEach((p, k) => {
          const bar = el("i", { title: `p(${k}) = ${p.toFixed(2)}` });
          bar.style.height = Math.round(4 + 26 * p) + "px";
          bar.style.background = k === value.level ? COLOURS[state] || "#1c7ed6" : "#ced4da";
          bars.append(bar);
        });
        row.append(bars);
      }
      this.states.append(row);
    }
    this.root.dataset.windows = String(this.lines.length);
  }

  draw() {
    // Each state's expected level (sum of k * p_k) over the last windows; gaps where no face.
    const ctx = this.canvas.getContext("2d");
    const w = this.canvas.width, h = this.canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#e9ecef";
    for (let k = 0; k <= 3; k++) {
      const y = h - 4 - (k / 3) * (h - 8);
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    }
    const n = this.lines.length;
    if (!n) return;
    const x = (i) => (n === 1 ? w / 2 : (i / (n - 1)) * (w - 2) + 1);
    for (const state of Object.keys(this.lines[n - 1].states)) {
      ctx.strokeStyle = COLOURS[state] || "#1c7ed6";
      ctx.beginPath();
      let drawing = false;
      this.lines.forEach((line, i) => {
        const v = line.states[state];
        if (!v) { drawing = false; return; }
        const e = v.probs.reduce((s, p, k) => s + k * p, 0);
        const y = h - 4 - (e / 3) * (h - 8);
        if (drawing) ctx.lineTo(x(i), y); else ctx.moveTo(x(i), y);
        drawing = true;
      });
      ctx.stroke();
    }
  }
}
