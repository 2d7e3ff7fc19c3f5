// Per-turn latency waterfall, drawn as SVG from the trace spans the server sends.
//
// One figure per turn, newest first. Time 0 is the end of the caller's speech
// (the start of the `end_of_turn` span); the agent's speech is clipped a little
// after it starts, since its length is not a latency.

const ROWS = [
  { name: "user_speech", label: "you", color: "#38bdf8" },
  { name: "end_of_turn", label: "endpoint", color: "#facc15" },
  { name: "asr", label: "ASR", color: "#60a5fa" },
  { name: "llm", label: "LLM", color: "#c084fc", tick: "ttft" },
  { name: "tts", label: "TTS", color: "#fb923c", tick: "ttfb" },
  { name: "agent_speech", label: "agent", color: "#4ade80" },
];
const SVG = "http://www.w3.org/2000/svg";
const STEPS = [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 30];
const WIDTH = 720, LABEL = 80, ROW = 22, TOP = 26, TAIL = 0.8;

function svgElement(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  if (text !== undefined) el.textContent = text;
  return el;
}

function ms(seconds) {
  return `${Math.round(seconds * 1000)} ms`;
}

class Waterfalls {
  constructor(container) {
    this.container = container;
    this.turns = new Map(); // turn -> { spans: [], metrics: null, figure }
  }

  turn(number) {
    let entry = this.turns.get(number);
    if (!entry) {
      const hint = this.container.querySelector(".hint");
      if (hint) hint.remove();
      const figure = document.createElement("figure");
      figure.className = "waterfall";
      figure.dataset.turn = number;
      this.container.prepend(figure);
      entry = { spans: [], metrics: null, figure };
      this.turns.set(number, entry);
    }
    return entry;
  }

  addSpan(span) {
    if (!ROWS.some((row) => row.name === span.name) && span.name !== "interruption") return;
    const entry = this.turn(span.turn);
    entry.spans.push(span);
    this.draw(span.turn);
  }

  setMetrics(metrics) {
    const entry = this.turn(metrics.turn);
    entry.metrics = metrics;
    this.draw(metrics.turn);
  }

  draw(number) {
    const { spans, metrics, figure } = this.turns.get(number);
    const eot = spans.find((s) => s.name === "end_of_turn");
    const speech = spans.find((s) => s.name === "agent_speech");
    const zero = eot ? eot.start : Math.min(...spans.map((s) => s.start));
    let end = zero + 0.5;
    for (const s of spans) {
      end = Math.max(end, s.name === "agent_speech" ? s.start + TAIL : s.end);
    }
    const heard = spans.filter((s) => s.name === "user_speech" && s.end <= zero + 0.05);
    const lead = heard.length ? Math.min(1.0, zero - heard[heard.length - 1].start) : 0.5;
    const begin = zero - Math.max(0.3, lead);
    const scale = (WIDTH - LABEL - 10) / (end - begin);
    const x = (t) => LABEL + (Math.min(Math.max(t, begin), end) - begin) * scale;
    const height = TOP + ROWS.length * ROW + 8;
    const svg = svgElement("svg", { viewBox: `0 0 ${WIDTH} ${height}`, role: "img" });

    const step = STEPS.find((s) => (end - begin) / s <= 10) || 60;
    for (let k = Math.ceil((begin - zero) / step); zero + k * step <= end; k++) {
      const t = zero + k * step;
      svg.append(svgElement("line", { x1: x(t), x2: x(t), y1: TOP - 4, y2: height - 6,
        class: "grid" }));
      svg.append(svgElement("text", { x: x(t), y: TOP - 8, class: "axis" },
        `${+(k * step).toFixed(1)} s`));
    }
    ROWS.forEach((row, index) => {
      const y = TOP + index * ROW;
      svg.append(svgElement("text", { x: 4, y: y + 15, class: "label" }, row.label));
      for (const s of spans.filter((span) => span.name === row.name)) {
        const stop = row.name === "agent_speech" ? Math.min(s.end, s.start + TAIL) : s.end;
        const width = Math.max(2, x(stop) - x(s.start));
        svg.append(svgElement("rect", { x: x(s.start), y: y + 3, width, height: ROW - 8,
          rx: 3, fill: row.color, class: `bar ${row.name}` }));
        const tick = row.tick && s.attrs && s.attrs[row.tick];
        if (tick !== undefined && tick !== null) {
          svg.append(svgElement("line", { x1: x(s.start + tick), x2: x(s.start + tick),
            y1: y + 1, y2: y + ROW - 3, class: "tick" }));
        }
        if (row.name !== "user_speech" && row.name !== "agent_speech") {
          const after = x(s.start) + width + 4;
          const fits = after + 60 < WIDTH;
          svg.append(svgElement("text", { x: fits ? after : x(s.start) - 4, y: y + 15,
            class: "value", "text-anchor": fits ? "start" : "end" }, ms(s.end - s.start)));
        }
      }
    });
    if (eot) {
      svg.append(svgElement("line", { x1: x(eot.start), x2: x(eot.start), y1: TOP - 4,
        y2: height - 6, class: "mark" }));
    }
    if (eot && speech) {
      svg.append(svgElement("line", { x1: x(speech.start), x2: x(speech.start), y1: TOP - 4,
        y2: height - 6, class: "mark agent" }));
    }
    for (const cut of spans.filter((s) => s.name === "interruption")) {
      svg.append(svgElement("line", { x1: x(cut.end), x2: x(cut.end), y1: TOP - 4,
        y2: height - 6, class: "mark cut" }));
    }

    const caption = document.createElement("figcaption");
    const parts = [`turn ${number}`];
    if (eot && speech) parts.push(`voice-to-voice ${ms(speech.start - eot.start)}`);
    if (metrics) {
      if (metrics.asr != null) parts.push(`ASR ${ms(metrics.asr)}`);
      if (metrics.llm_ttft != null) parts.push(`LLM first token ${ms(metrics.llm_ttft)}`);
      if (metrics.tts_ttfb != null) parts.push(`TTS first audio ${ms(metrics.tts_ttfb)}`);
      if (metrics.interrupted) parts.push("cut off");
    }
    caption.textContent = parts.join(" · ");
    figure.replaceChildren(caption, svg);
  }
}

window.Waterfalls = Waterfalls;
