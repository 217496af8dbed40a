// The supervisor's board: the operation's agents, queues and live calls, live through the session's socket (no
// polling); change an agent's state, end a call, listen to a call on a phone (the extension field, remembered in
// this browser) or in this page (WebRTC from the relay: the server hands over its offer, the page answers it,
// receive-only: no microphone is asked for and nothing goes back to the call), and stop listening. The server
// scopes everything to the supervisor's operation.
import { $, call, el, liveSession, notice, since, syncClock } from "/desk/static/desk.js";

let board = null;
let stream = null;
const LISTEN_KEY = "callbridge.board.listen-extension";

// one field for every call (the rows are redrawn on each snapshot: a field in a row would lose what was typed)
$("#f-listen").value = localStorage.getItem(LISTEN_KEY) || "";
$("#f-listen").addEventListener("change", () => localStorage.setItem(LISTEN_KEY, $("#f-listen").value.trim()));

async function listen(c) {
  const extension = $("#f-listen").value.trim();
  localStorage.setItem(LISTEN_KEY, extension);
  result(await call(`/supervisor/api/calls/${encodeURIComponent(c.conn_id)}/listen`, { extension }));
  // who listens comes with the live snapshots (the server sends one on Listen, and when its phone answers or not)
}

// Listening in this page: one call at a time; one audio element per party (the relay sends each party as its own
// stream: it does not mix), so the supervisor hears both.
let hearing = null;  // { conn_id, monitor_id, pc }
// this page's id, on its live socket and on its Listen here: the server ends the page's listening when that socket
// closes (a crashed browser, a lost network), as it does when the page says it goes (pagehide)
const PAGE_ID = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");

async function listenHere(c) {
  stopHearing();
  const path = `/supervisor/api/calls/${encodeURIComponent(c.conn_id)}/listen`;
  const body = await call(path, { on: "page", page: PAGE_ID });
  result(body);
  if (!body.ok) return;
  const pc = new RTCPeerConnection();
  hearing = { conn_id: c.conn_id, monitor_id: body.monitor_id, pc };
  pc.ontrack = (event) => {
    const audio = el("audio", { autoplay: "", "data-testid": "hearing-audio" });
    audio.srcObject = new MediaStream([event.track]);
    $("#hearing").append(audio);
  };
  let answer = null;
  try {
    await pc.setRemoteDescription({ type: "offer", sdp: body.offer });
    answer = await pc.createAnswer();
  } catch (error) {
    return failed(pc, path, error);
  }
  // the relay has the answer (this page's ICE credentials and DTLS fingerprint) before the page's first ICE check,
  // which setLocalDescription starts: no check reaches a relay that cannot answer it yet. The answer carries no
  // candidates: the page is the controlling ICE agent (the offer says ice-lite) and the relay learns its address
  // from its checks, as it does for the agent's page (Chromium hides host addresses behind mDNS names)
  const done = await call(`${path}/answer`, { monitor_id: body.monitor_id, sdp: answer.sdp });
  if (!hearing || hearing.pc !== pc) return;  // stopped meanwhile
  result(done);
  if (!done.ok) { stopHearing(); return; }
  try {
    await pc.setLocalDescription(answer);
  } catch (error) {
    return failed(pc, path, error);
  }
}

async function failed(pc, path, error) {
  if (hearing && hearing.pc === pc) stopHearing();
  await call(`${path}/stop`, {});
  result({ ok: false, message: `This browser could not take the call's audio (${error.message}).` });
}

function stopHearing() {
  if (!hearing) return;
  hearing.pc.close();
  hearing = null;
  $("#hearing").replaceChildren();
}

// the page goes away while it listens: the listening ends with it
window.addEventListener("pagehide", () => {
  if (hearing) {
    fetch(`/supervisor/api/calls/${encodeURIComponent(hearing.conn_id)}/listen/stop`, {
      method: "POST", credentials: "same-origin", keepalive: true, headers: { "content-type": "application/json" }, body: "{}" });
  }
});

function listenerText(listener) {
  if (!listener) return "";
  if (listener.on === "page") return `${hearing && hearing.monitor_id === listener.monitor_id ? "this page" : `${listener.extension}'s page`} (${listener.state})`;
  return `${listener.extension} (${listener.state})`;
}

function result(body) {
  const node = $("#result");
  node.className = `notice ${body.ok ? "ok" : "bad"}`;
  node.textContent = body.message || (body.ok ? "Done." : "Failed.");
  node.hidden = false;
  if (body.status === 401) signedOut("your session ended");
}

$("#signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = await call("/supervisor/signin", { operation: $("#f-operation").value, username: $("#f-username").value, password: $("#f-password").value });
  $("#f-password").value = "";
  if (!body.ok) { $("#signin-error").textContent = body.message; $("#signin-error").hidden = false; return; }
  $("#signin-error").hidden = true;
  start(body);
});

$("#signout").addEventListener("click", async () => {
  if (hearing) await call(`/supervisor/api/calls/${encodeURIComponent(hearing.conn_id)}/listen/stop`, {});
  await call("/supervisor/signout", {});
  signedOut(null);
});

function start(body) {
  notice(null, "", "session");
  $("#signin").hidden = true; $("#board").hidden = false; $("#signout").hidden = false;
  $("#who").textContent = `${body.supervisor.name || body.supervisor.username} · ${body.operation.id}`;
  $("#who").hidden = false;
  // the account's extension is the default; what this browser remembers (typed here before) wins
  if (!$("#f-listen").value && body.supervisor.extension) $("#f-listen").value = body.supervisor.extension;
  stream = liveSession(`/supervisor/api/live?page=${PAGE_ID}`, onLive, { stale: "The board", onSignedOut: signedOut });
}

function signedOut(reason) {
  stopHearing();
  if (stream) stream.stop();
  stream = null; board = null;
  $("#signin").hidden = false; $("#board").hidden = true; $("#signout").hidden = true; $("#who").hidden = true;
  $("#connection").hidden = true;
  notice(null, "", "connection");
  if (reason) notice(`Signed out: ${reason}. Sign in again.`, "warn", "session");
}


function onLive(message) {
  if (message.type === "snapshot") {
    syncClock(message.now); board = message;
    if (hearing) {  // ended elsewhere (Stop on another board, the call's end, the relay): this page stops too
      const c = board.calls.find((x) => x.conn_id === hearing.conn_id);
      const mine = !!c && !!c.listener && c.listener.monitor_id === hearing.monitor_id;
      if (mine) hearing.seen = true;
      else if (hearing.seen) {  // (a board from before Listen may still arrive: not seen yet)
        stopHearing();
        result({ ok: false, message: "The listening in this page ended." });
      }
    }
    render();
  }
}

function stateText(agent) { return agent.state === "aux" ? (agent.aux_name || `aux ${agent.aux_state}`) : agent.state.replace("_", " "); }

function render() {
  if (!board) return;
  const agents = $("#agents");
  agents.replaceChildren(...board.agents.map((agent) => {
    const select = el("select", { "aria-label": `New state for ${agent.agent_id}`, "data-testid": `set-state-${agent.agent_id}` },
      el("option", { value: "" }, "Set…"), el("option", { value: "ready" }, "Ready"),
      ...board.aux_states.map((aux) => el("option", { value: aux.id }, aux.name)), el("option", { value: "logout" }, "Log out"));
    select.addEventListener("change", async () => {
      if (!select.value) return;
      result(await call(`/supervisor/api/agents/${encodeURIComponent(agent.agent_id)}/state`, { status: select.value }));
    });
    return el("tr", { "data-agent": agent.agent_id },
      el("td", {}, `${agent.agent_id} ${agent.name}`),
      el("td", { class: `state-${agent.state}`, "data-testid": `agent-state-${agent.agent_id}` }, stateText(agent)),
      el("td", { class: "since", "data-since": agent.state_since }, since(agent.state_since)),
      el("td", {}, agent.registered ? "registered" : "—"),
      el("td", {}, agent.customer_number || ""),
      el("td", {}, select));
  }));
  $("#queues").replaceChildren(...board.queues.map((queue) => el("tr", {},
    el("td", {}, queue.name), el("td", { "data-testid": `queue-waiting-${queue.name}` }, String(queue.waiting)),
    el("td", { class: "since", "data-since": queue.oldest_since || "" }, since(queue.oldest_since)))));
  $("#calls").replaceChildren(...board.calls.map((c) => el("tr", { "data-conn": c.conn_id },
    el("td", {}, c.customer_number), el("td", {}, c.queue || ""), el("td", {}, c.agent_id || ""), el("td", {}, c.state),
    el("td", { class: "since", "data-since": c.answered_at || c.started_at }, since(c.answered_at || c.started_at)),
    el("td", { class: "muted" }, c.conn_id),
    el("td", { "data-testid": `listener-${c.conn_id}` }, listenerText(c.listener)),
    el("td", {}, ...(c.listener
      ? [el("button", { "data-testid": `stop-listening-${c.conn_id}`, onclick: async () => {
        if (hearing && hearing.conn_id === c.conn_id) stopHearing();
        result(await call(`/supervisor/api/calls/${encodeURIComponent(c.conn_id)}/listen/stop`, {}));
      } }, "Stop listening")]
      : [el("button", { "data-testid": `listen-here-${c.conn_id}`, onclick: () => listenHere(c) }, "Listen here"),
        el("button", { "data-testid": `listen-${c.conn_id}`, onclick: () => listen(c) }, "On phone")]),
    el("button", { class: "danger", disabled: !c.agent_id, onclick: async () => {
      result(await call(`/supervisor/api/calls/${encodeURIComponent(c.conn_id)}/end`, {}));
    } }, "End call")))));
}

setInterval(() => {  // the clock on screen; data comes from the live socket only
  document.querySelectorAll(".since").forEach((cell) => { cell.textContent = since(cell.dataset.since); });
}, 1000);
