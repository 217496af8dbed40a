// The agent's page: sign in, register the browser's phone with SIP.js over WebSocket (RFC 7118), show the agent
// and its call live (the session's socket, no polling), and act through /agent/api/... (the server acts only on
// the signed-in agent). The SIP password typed at sign-in stays in this page's memory, for digest only.
import { Inviter, Registerer, RegistererState, SessionState, UserAgent } from "/desk/lib/sip.js/index.js";
import { $, call, el, liveSession, notice, since, syncClock } from "/desk/static/desk.js";

let info = null;        // what /agent/signin answered: operation, agent, sip, aux states, activity codes
let snapshot = null;    // the last live snapshot: {agent, call}
let phone = null;       // {ua, registerer}
let invitation = null;  // an incoming call not yet answered
let outgoing = null;    // a call this page places, until it ends
let stream = null;      // the live socket
let password = "";      // kept in memory only, for SIP digest

const show = (node, visible) => { node.hidden = !visible; };

function result(body) {
  const node = $("#result");
  node.className = `notice ${body.ok ? "ok" : "bad"}`;
  node.textContent = body.message || (body.ok ? "Done." : "Failed.");
  node.hidden = false;
}

async function act(action, fields = {}) {
  const body = await call(`/agent/api/${action}`, fields);
  result(body);
  if (body.status === 401) signedOut("your session ended");
  return body;
}

// --- sign-in ----------------------------------------------------------------------------------------------------
$("#signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const fields = { operation: $("#f-operation").value, extension: $("#f-extension").value, password: $("#f-password").value };
  const body = await call("/agent/signin", fields);
  if (!body.ok) { $("#signin-error").textContent = body.message; show($("#signin-error"), true); return; }
  password = fields.password;
  $("#f-password").value = "";
  show($("#signin-error"), false);
  start(body);
});

$("#signout").addEventListener("click", async () => {
  await call("/agent/signout", {});
  signedOut(null);
});

function signedOut(reason) {
  if (stream) stream.stop();
  stream = null;
  stopPhone();
  password = "";
  info = null;
  show($("#desk"), false); show($("#signout"), false); show($("#who"), false); show($("#connection"), false);
  show($("#signin"), true);
  notice(null, "", "connection");
  if (reason === "signed in elsewhere") notice("You signed in on another page or device: this page is signed out.", "warn", "session");
  else if (reason) notice(`Signed out: ${reason}. Sign in again.`, "warn", "session");
}

function start(body) {
  info = body;
  notice(null, "", "session");
  show($("#signin"), false); show($("#desk"), true); show($("#signout"), true);
  $("#who").textContent = `${body.agent.name || body.agent.extension} · ${body.operation.id}`;
  show($("#who"), true);
  buildStates(body.aux_states);
  buildCodes(body.activity_codes);
  checkMicrophone();
  startPhone();
  stream = liveSession("/agent/api/live", onLive, { stale: "What you see", onSignedOut: signedOut });
}

function onLive(message) {
  if (message.type === "snapshot") { syncClock(message.now); snapshot = message; render(); }
}

// --- the microphone and the phone -------------------------------------------------------------------------------
async function checkMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    notice("No microphone access on this page: it must be served over HTTPS (or from localhost).", "bad", "mic");
    return;
  }
  try {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    media.getTracks().forEach((track) => track.stop());
    notice(null, "", "mic");
  } catch (error) {
    notice("The microphone was refused: you cannot talk on calls from this page. Allow the microphone for this site in the browser's settings, then reload.", "bad", "mic");
  }
}

function setPhone(text, kind) { const pill = $("#phone"); pill.textContent = `Phone: ${text}`; pill.className = `pill ${kind}`; }

async function startPhone() {
  if (!info.sip) { setPhone("no SIP WebSocket on this server", "bad"); return; }
  const host = info.sip.ws_host || location.hostname;
  const server = `${info.sip.wss ? "wss" : "ws"}://${host.includes(":") ? `[${host}]` : host}:${info.sip.ws_port}`;
  const ua = new UserAgent({
    uri: UserAgent.makeURI(info.sip.uri), transportOptions: { server }, logLevel: "error",
    authorizationUsername: info.sip.username, authorizationPassword: password,
    displayName: info.agent.name || info.agent.extension,
    delegate: { onInvite: onInvite, onDisconnect: (error) => { if (error) phoneLost(); } },
  });
  const registerer = new Registerer(ua, { expires: 300 });
  registerer.stateChange.addListener((state) => {
    if (phone && phone.registerer === registerer) phone.registered = state === RegistererState.Registered;
    if (state === RegistererState.Registered) setPhone("registered", "ok");
    else if (state === RegistererState.Unregistered) setPhone("not registered", "warn");
    render();
  });
  phone = { ua, registerer, retry: 500 };
  setPhone("connecting…", "warn");
  try {
    await ua.start();
    await registerer.register();
  } catch (error) {
    phoneLost();
  }
}

function phoneLost() {
  if (!phone) return;
  setPhone("connection lost, reconnecting…", "bad");
  const current = phone;
  setTimeout(async () => {
    if (phone !== current) return;
    try {
      await current.ua.reconnect();
      await current.registerer.register();
      current.retry = 500;
    } catch (error) {
      current.retry = Math.min(current.retry * 2, 8000);
      phoneLost();
    }
  }, current.retry);
}

function stopPhone() {
  const current = phone;
  phone = null;
  if (current) current.ua.stop().catch(() => {});
  setPhone("not registered", "");
}

function onInvite(incoming) {
  invitation = incoming;
  $("#incoming-from").textContent = incoming.remoteIdentity.uri.user || "";
  show($("#incoming"), true);
  incoming.stateChange.addListener((state) => {
    if (state === SessionState.Established) attachAudio(incoming);
    if (state === SessionState.Terminated || state === SessionState.Established) {
      if (invitation === incoming) invitation = null;
      show($("#incoming"), false);
      render();
    }
  });
  render();
}

function attachAudio(session) {
  const handler = session.sessionDescriptionHandler;
  if (!handler || !handler.peerConnection) return;
  const media = new MediaStream();
  handler.peerConnection.getReceivers().forEach((receiver) => { if (receiver.track) media.addTrack(receiver.track); });
  $("#remote-audio").srcObject = media;
}

// A call the agent places from the page: the browser's own INVITE (WebRTC offer, digest as for any phone), which
// callbridge anchors on its media relay and routes as a desk phone's (an extension, or a number through the trunk).
async function placeCall(event) {
  event.preventDefault();
  const number = $("#dial-number").value.trim();
  if (!phone || outgoing || !number) return;
  const domain = UserAgent.makeURI(info.sip.uri).host;
  const target = /^\+?[0-9]{1,32}$/.test(number) ? UserAgent.makeURI(`sip:${number}@${domain}`) : undefined;
  if (!target) { result({ ok: false, message: "Dial digits only, with an optional leading +: a number or an extension." }); return; }
  const session = new Inviter(phone.ua, target, { sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } } });
  outgoing = session;
  session.stateChange.addListener((state) => {
    if (state === SessionState.Established) attachAudio(session);
    if (state === SessionState.Terminated && outgoing === session) outgoing = null;
    render();
  });
  render();
  try {
    await session.invite({ requestDelegate: { onReject: (response) => {
      const { statusCode, reasonPhrase } = response.message;
      result({ ok: false, message: `The call to ${number} failed: ${statusCode} ${reasonPhrase}.` });
    } } });
  } catch (error) {
    if (outgoing === session) outgoing = null;
    result({ ok: false, message: `The call to ${number} could not be placed: ${error.message || error}` });
    render();
  }
}

// A call anchored on callbridge's media relay reaches the page as WebRTC (DTLS-SRTP, ICE); a call whose media is
// direct offers plain RTP, which no browser takes: the page says what it needs rather than fail obscurely.
function browserAudio(incoming) {
  const sdp = incoming.request.body || "";
  return sdp === "" || sdp.includes("UDP/TLS/RTP/SAVPF");
}

async function answer() {
  if (!invitation) return;
  if (!browserAudio(invitation)) {
    result({ ok: false, message: "The call could not be answered in the browser: its audio needs callbridge's media relay (rtpengine, an operation whose media is anchored). Take it on a desk phone." });
    return;
  }
  try {
    await invitation.accept({ sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } } });
  } catch (error) {
    result({ ok: false, message: `The call could not be answered in the browser: ${error.message || error}` });
  }
}

// --- the desk ---------------------------------------------------------------------------------------------------
function buildStates(auxStates) {
  const box = $("#states");
  box.replaceChildren(el("button", { "data-status": "ready", "data-testid": "state-ready", onclick: () => act("state", { status: "ready" }) }, "Ready ", el("kbd", { text: "R" })));
  for (const aux of auxStates) {
    box.append(el("button", { "data-status": aux.id, "data-testid": `state-${aux.id}`, onclick: () => act("state", { status: aux.id }) }, aux.name));
  }
  box.append(el("button", { "data-status": "logout", "data-testid": "state-logout", onclick: () => act("state", { status: "logout" }) }, "Log out"));
}

function buildCodes(codes) {
  for (const [group, select] of [[1, $("#cod-act")], [2, $("#cod-act-2")]]) {
    select.replaceChildren(el("option", { value: "" }, group === 1 ? "Activity…" : "Detail…"));
    for (const code of codes.filter((c) => c.group === group)) select.append(el("option", { value: code.code }, `${code.code} ${code.name}`));
  }
}

const keypad = $("#keypad");
for (const key of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"]) {
  keypad.append(el("button", { "data-tone": key, onclick: () => act("dtmf", { tones: key }) }, key));
}

function auxName(id) { const aux = (info?.aux_states || []).find((a) => a.id === id); return aux ? aux.name : id; }

function render() {
  if (!snapshot || !info) return;
  const agent = snapshot.agent, callNow = snapshot.call;
  const stateText = agent.state === "aux" ? auxName(agent.aux_state) : agent.state.replace("_", " ");
  const stateNode = $("#agent-state");
  stateNode.textContent = stateText;
  stateNode.className = `state-${agent.state}`;
  stateNode.dataset.state = agent.state === "aux" ? agent.aux_state : agent.state;
  $("#agent-name").textContent = `${agent.name || ""} · extension ${agent.agent_id}`;
  const display = agent.display || {};
  show($("#transfer-card"), display.dial !== "hide");
  show($("#recall-card"), display.dial !== "hide");
  show($("#dial-form"), display.dial !== "hide");
  show($("#disposition-card"), display.disposition !== "hide");
  show($("#hang"), display.hungup !== "hide");
  show($("#call"), !!callNow); show($("#no-call"), !callNow);
  const transfer = callNow && callNow.transfer;
  if (callNow) {
    $("#call-number").textContent = callNow.customer_number;
    $("#call-queue").textContent = callNow.queue || "—";
    $("#call-state").textContent = callNow.state;
    $("#call-conn").textContent = callNow.conn_id;
    $("#call-transfer").textContent = transfer ? `${transfer.kind} transfer to ${transfer.target}: ${transfer.state}` : "";
  }
  const live = !!callNow && callNow.state !== "ringing";
  $("#answer").disabled = !invitation;
  $("#dial").disabled = !(phone && phone.registered) || !!outgoing || !!callNow || !!invitation;
  $("#hang").disabled = !callNow;
  $("#hold").disabled = !live || !!transfer;
  $("#hold").textContent = agent.on_hold ? "Take off hold" : "Hold";
  $("#hold").classList.toggle("active", agent.on_hold);
  $("#mute").disabled = !live || !!transfer;
  $("#mute").textContent = agent.muted ? "Unmute" : "Mute";
  $("#mute").classList.toggle("active", agent.muted);
  $("#transfer").disabled = !live || !!transfer;
  $("#consult").disabled = !live || !!transfer;
  $("#complete").disabled = !(transfer && transfer.kind === "attended" && transfer.state === "consulting");
  $("#cancel").disabled = !(transfer && transfer.kind === "attended");
  keypad.querySelectorAll("button").forEach((b) => { b.disabled = !live; });
  $("#states").querySelectorAll("button").forEach((b) => {
    b.classList.toggle("active", b.dataset.status === stateNode.dataset.state);
  });
  tick();
}

function tick() {
  if (!snapshot) return;
  $("#state-time").textContent = since(snapshot.agent.state_since);
  const callNow = snapshot.call;
  $("#call-duration").textContent = callNow ? since(callNow.answered_at || callNow.started_at) : "";
}
setInterval(tick, 1000);  // the clock on screen; data comes from the live socket only

function transferTarget() { return $("#transfer-agent").value || $("#transfer-target").value.trim(); }
$("#transfer-agent").addEventListener("focus", async () => {
  const body = await call("/agent/api/available-agents");
  if (!body.ok) return;
  const select = $("#transfer-agent"), chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "Agent available now…"));
  for (const a of body.agents) select.append(el("option", { value: a.extension }, `${a.extension} ${a.name}`));
  select.value = chosen;
});
$("#answer").addEventListener("click", answer);
$("#dial-form").addEventListener("submit", placeCall);
$("#hang").addEventListener("click", () => act("hang"));
$("#hold").addEventListener("click", () => act("hold"));
$("#mute").addEventListener("click", () => act("mute"));
$("#transfer").addEventListener("click", () => act("transfer", { target: transferTarget() }));
$("#consult").addEventListener("click", () => act("attended", { target: transferTarget() }));
$("#complete").addEventListener("click", () => act("attended/complete"));
$("#cancel").addEventListener("click", () => act("attended/cancel"));
$("#dispose").addEventListener("click", () => act("disposition", { cod_act: $("#cod-act").value, cod_act_2: $("#cod-act-2").value, comments: $("#comments").value }));
$("#recall").addEventListener("click", () => {
  const when = $("#recall-when").value;  // YYYY-MM-DDTHH:MM, the operation's local time
  const date = when ? `${when.replace(/[-T:]/g, "")}00` : "";
  act("recall", { customer_phone: $("#recall-number").value.trim(), date, type_recall: $("#recall-type").value });
});

const keys = { a: "#answer", h: "#hang", o: "#hold", m: "#mute", t: "#transfer", c: "#consult", r: '[data-status="ready"]' };
document.addEventListener("keydown", (event) => {
  if (!info || event.ctrlKey || event.metaKey || event.altKey) return;
  if (["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName)) return;
  const key = event.key.toLowerCase();
  if (/^[0-9*#]$/.test(key)) { const b = keypad.querySelector(`[data-tone="${key}"]`); if (b && !b.disabled) b.click(); return; }
  const target = keys[key] && document.querySelector(keys[key]);
  if (target && !target.disabled && target.offsetParent !== null) { event.preventDefault(); target.click(); }
});
