// The Cascade voice page: microphone -> websocket -> pipeline -> websocket -> speaker.
//
// Binary websocket messages are PCM16 mono audio at the AudioContext's rate (both
// ways; the server resamples). Text messages are JSON events (see the server's
// browser_session module). In push-to-talk mode the page keeps streaming, but
// silence while the button is up, so the server's VAD hears each turn end.

const $ = (id) => document.getElementById(id);
const stats = { sentSamples: 0, receivedSamples: 0, rate: 0, events: 0 };
window.cascadeStats = stats;

let socket = null;
let context = null;
let player = null;
let mode = "hands-free";
let talking = false;
let agentSpeaking = false;
let partialBubble = null;
const agentBubbles = new Map();
const waterfalls = new Waterfalls($("waterfalls"));

function socketUrl() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function setPill(element, text, className) {
  element.textContent = text;
  element.className = `pill ${className}`;
}

function bubble(who, text, extraClass = "") {
  const element = document.createElement("p");
  element.className = `bubble ${who} ${extraClass}`.trim();
  element.textContent = text;
  $("dialogue").append(element);
  element.scrollIntoView({ block: "nearest" });
  return element;
}

function showError(message) {
  $("error").textContent = message;
}

function handle(event) {
  stats.events += 1;
  switch (event.type) {
    case "ready":
      setPill($("connection"), `connected · ${event.conversation}`, "on");
      setPill($("state"), "listening", "state-listening");
      break;
    case "state":
      setPill($("state"), event.state, `state-${event.state}`);
      break;
    case "user_speech":
      setPill($("you-speaking"), event.speaking ? "you: speaking" : "you: quiet",
        event.speaking ? "live" : "dim");
      break;
    case "transcript":
      if (!event.text) break;
      if (!partialBubble) partialBubble = bubble("you", "", "partial");
      partialBubble.textContent = event.text + (event.final ? "" : " …");
      break;
    case "user_turn":
      if (partialBubble) partialBubble.remove();
      partialBubble = null;
      if (event.text) bubble("you", event.text);
      break;
    case "agent_text": {
      let element = agentBubbles.get(event.turn);
      if (!element) {
        element = bubble("agent", "", "planned");
        agentBubbles.set(event.turn, element);
      }
      element.textContent = `${element.textContent} ${event.text}`.trim();
      break;
    }
    case "agent_started":
      agentSpeaking = true;
      break;
    case "agent_stopped": {
      agentSpeaking = false;
      let element = agentBubbles.get(event.turn);
      if (!element) element = bubble("agent", "");
      element.className = `bubble agent${event.interrupted ? " cut" : ""}`;
      element.textContent = event.text || element.textContent;
      agentBubbles.delete(event.turn);
      break;
    }
    case "clear":
      if (player) player.port.postMessage("clear");
      break;
    case "span":
      waterfalls.addSpan(event);
      break;
    case "turn":
      waterfalls.setMetrics(event);
      break;
    case "error":
      showError(event.message);
      break;
  }
}

function sendAudio(pcm) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const out = mode === "push-to-talk" && !talking ? new Int16Array(pcm.length) : pcm;
  socket.send(out.buffer);
  stats.sentSamples += out.length;
  $("sent-seconds").textContent = (stats.sentSamples / stats.rate).toFixed(1);
}

function receiveAudio(buffer) {
  const pcm = new Int16Array(buffer);
  stats.receivedSamples += pcm.length;
  $("received-samples").textContent = stats.receivedSamples;
  $("received-seconds").textContent = (stats.receivedSamples / stats.rate).toFixed(1);
  if (player) player.port.postMessage(pcm, [pcm.buffer]);
}

async function start() {
  $("start").disabled = true;
  try {
    // Audio graph and connection first, the microphone last: no first words are lost
    // while the page is still getting ready.
    context = new AudioContext();
    await context.audioWorklet.addModule("/static/worklet.js");
    await context.resume();
    stats.rate = context.sampleRate;
    player = new AudioWorkletNode(context, "player", { outputChannelCount: [1] });
    player.connect(context.destination);
    await connect();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true,
        autoGainControl: true },
    });
    const source = context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(context, "capture", {
      numberOfOutputs: 0,
      processorOptions: { chunk: Math.round(context.sampleRate * 0.02) },
    });
    source.connect(capture);
    capture.port.onmessage = (event) => {
      $("level").value = event.data.peak;
      sendAudio(event.data.pcm);
    };
    $("modes").disabled = false;
    $("start").textContent = "Talking";
  } catch (error) {
    showError(`could not start: ${error.message}`);
    $("start").disabled = false;
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    socket = new WebSocket(socketUrl());
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "hello", sample_rate: context.sampleRate }));
    };
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") {
        receiveAudio(event.data);
        return;
      }
      const message = JSON.parse(event.data);
      handle(message);
      if (message.type === "ready") resolve();
    };
    socket.onerror = () => reject(new Error("the connection to the server failed"));
    socket.onclose = (event) => {
      reject(new Error(`the server closed the connection ${event.reason || ""}`.trim()));
      setPill($("connection"), `closed${event.reason ? `: ${event.reason}` : ""}`, "off");
      setPill($("state"), "idle", "state-idle");
      $("start").disabled = false;
      $("start").textContent = "Reconnect";
      $("start").onclick = () => {
        $("start").disabled = true;
        connect().catch((error) => showError(error.message));
      };
    };
  });
}

function setTalking(on) {
  if (mode !== "push-to-talk" || on === talking) return;
  talking = on;
  $("talk").classList.toggle("active", on);
  if (on && agentSpeaking && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "interrupt" }));
    if (player) player.port.postMessage("clear");
  }
}

$("start").onclick = start;
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.onchange = () => {
    mode = radio.value;
    $("talk").hidden = mode !== "push-to-talk";
    talking = false;
  };
}
$("talk").addEventListener("pointerdown", () => setTalking(true));
for (const type of ["pointerup", "pointerleave", "pointercancel"]) {
  $("talk").addEventListener(type, () => setTalking(false));
}
document.addEventListener("keydown", (event) => {
  if (event.code === "Space" && !event.repeat && mode === "push-to-talk") {
    event.preventDefault();
    setTalking(true);
  }
});
document.addEventListener("keyup", (event) => {
  if (event.code === "Space") setTalking(false);
});
