// Shared by the agent's page and the supervisor's board: JSON calls with the session cookie, the live socket
// (reconnects with a growing delay, never polls) with its connection pill and notices, and time formatting.

export const $ = (selector, root = document) => root.querySelector(selector);

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

// POST or GET a JSON endpoint; resolves to the body ({ok, message, ...}); a network failure gives ok=false too.
export async function call(path, fields = undefined) {
  const init = { credentials: "same-origin", headers: {} };
  if (fields !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(fields);
  }
  try {
    const response = await fetch(path, init);
    const body = await response.json().catch(() => ({ ok: false, message: `HTTP ${response.status}` }));
    body.status = response.status;
    return body;
  } catch (error) {
    return { ok: false, status: 0, message: "The server cannot be reached." };
  }
}

// The live socket: onMessage(data) for every message; onState("open" | "lost" | "signed_out", reason).
export function live(path, onMessage, onState) {
  let socket = null;
  let delay = 250;
  let stopped = false;
  const url = () => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
  function open() {
    if (stopped) return;
    socket = new WebSocket(url());
    socket.addEventListener("open", () => { delay = 250; onState("open"); });
    socket.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.type === "signed_out") { stopped = true; onState("signed_out", data.reason); }
      onMessage(data);
    });
    socket.addEventListener("close", (event) => {
      if (stopped) return;
      if (event.code === 4001) { stopped = true; onState("signed_out", "your session ended"); return; }
      onState("lost");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 2000);
    });
  }
  open();
  return { stop() { stopped = true; if (socket) socket.close(1000); } };
}

// A notice in #notices, one per key (a later one with the same key replaces it); no text removes it.
export function notice(text, kind = "bad", key = "general") {
  let node = document.querySelector(`#notices [data-key="${key}"]`);
  if (!text) { if (node) node.remove(); return; }
  if (!node) { node = el("p", { class: "notice", "data-key": key, role: "alert" }); $("#notices").append(node); }
  node.className = `notice ${kind}`;
  node.textContent = text;
}

// A signed-in page's live socket with what goes with it: the #connection pill, the red notice while it is down
// (`stale` says what may be out of date), and `onSignedOut(reason)` when the server ends the session.
export function liveSession(path, onMessage, { stale, onSignedOut }) {
  return live(path, onMessage, (state, reason) => {
    const pill = $("#connection");
    pill.hidden = false;
    if (state === "open") { pill.textContent = "Connected"; pill.className = "pill ok"; notice(null, "", "connection"); }
    else if (state === "lost") {
      pill.textContent = "Connection lost: reconnecting…"; pill.className = "pill bad";
      notice(`The connection to callbridge dropped: reconnecting. ${stale} may be out of date until it is back.`, "bad", "connection");
    } else if (state === "signed_out") onSignedOut(reason);
  });
}

// Server time minus this browser's, so durations count from the server's clock.
let skew = 0;
export function syncClock(serverNow) { if (serverNow) skew = Date.parse(serverNow) - Date.now(); }
export function since(stamp) {
  if (!stamp) return "";
  const seconds = Math.max(0, Math.floor((Date.now() + skew - Date.parse(stamp)) / 1000));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}
