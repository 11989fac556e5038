// sockit chat in a browser: one WebSocket to /chat/ws, JSON messages both ways.
// Peer text is only ever set with textContent, never parsed as HTML.
"use strict";

const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 10000;
const LIST_REFRESH_MS = 1000;
const MAX_LOG_LINES = 2000;

const $ = (id) => document.getElementById(id);
const state = {
  ws: null,
  nick: null,        // the nick we hold (or want back after a reconnect)
  room: null,
  token: "",
  registered: false,
  backoff: RECONNECT_FIRST_MS,
  pendingWho: 0,     // /who and /rooms answers we asked for, shown in the side panel
  pendingRooms: 0,
  refreshTimer: null,
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/chat/ws");
  state.ws = ws;
  state.registered = false;
  state.pendingWho = state.pendingRooms = 0;
  setStatus("connecting…", false);
  ws.onopen = () => setStatus("connected", false);
  ws.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch (_) { return; }
    receive(msg);
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    state.registered = false;
    const wait = state.backoff + Math.floor(Math.random() * 250);
    state.backoff = Math.min(state.backoff * 2, RECONNECT_MAX_MS);
    const why = event.reason ? " (" + event.reason + ")" : "";
    setStatus("disconnected" + why + "; reconnecting in " + Math.ceil(wait / 1000) + " s", true);
    setTimeout(connect, wait);
  };
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function register() {
  if (state.token) send({ type: "auth", token: state.token });
  const msg = { type: "register", nick: state.nick };
  if (state.room) msg.room = state.room;
  send(msg);
}

function receive(msg) {
  switch (msg.type) {
    case "hello":
      $("token-box").hidden = !msg.token_required;
      // After a restart, take the same nick and room back without asking.
      if (state.nick && (!msg.token_required || state.token)) register();
      break;
    case "ready":
      state.registered = true;
      state.backoff = RECONNECT_FIRST_MS;
      state.nick = msg.nick;
      state.room = msg.room;
      $("login").hidden = true;
      $("chat").hidden = false;
      setStatus("you are " + msg.nick + (msg.room ? " in #" + msg.room : ", in no room"), false);
      document.title = (msg.room ? "#" + msg.room + " — " : "") + "sockit chat";
      if (document.activeElement === document.body || document.activeElement === $("nick")) $("line").focus();
      refreshLists();
      break;
    case "message":
      addLine(msg.time, [nickSpan(msg.nick, "<" + msg.nick + ">"), " " + msg.text], "message");
      break;
    case "action":
      addLine(msg.time, ["* ", nickSpan(msg.nick, msg.nick), " " + msg.text], "action");
      break;
    case "private":
      addLine(msg.time, ["*", nickSpan(msg.from, msg.from), " -> " + msg.to + "* " + msg.text], "private");
      break;
    case "notice":
      if (panelNotice(msg.text)) break;
      addLine(msg.time, [msg.text], "notice");
      if (/ (joined|left|is now known as) /.test(msg.text)) scheduleRefresh();
      break;
    case "error":
      if (!state.registered) {
        $("login-error").textContent = msg.message;
        $("login").hidden = false;
        $("chat").hidden = true;
        $("nick").focus();
      } else {
        addLine(Date.now(), [msg.message], "error");
      }
      break;
  }
}

// The answers to the page's own /who and /rooms fill the side panel instead of the log.
function panelNotice(text) {
  if (state.pendingWho > 0 && text.startsWith("in #")) {
    state.pendingWho--;
    const colon = text.indexOf(": ");
    fillList($("who"), splitNames(text.slice(colon + 2)), (name) => {
      const li = document.createElement("li");
      li.appendChild(nickSpan(name, name));
      return li;
    });
    $("who-title").textContent = "Here in " + text.slice(3, colon);
    return true;
  }
  if (state.pendingRooms > 0 && text.startsWith("rooms: ")) {
    state.pendingRooms--;
    fillList($("rooms"), splitNames(text.slice(7)), (entry) => {
      const li = document.createElement("li");
      const name = entry.split(" ")[0];
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = entry;
      button.addEventListener("click", () => send({ type: "join", room: name }));
      if (name === "#" + state.room) li.className = "current";
      li.appendChild(button);
      return li;
    });
    return true;
  }
  return false;
}

function splitNames(list) {
  return list === "(none)" ? [] : list.split(", ");
}

function fillList(ul, items, make) {
  ul.replaceChildren(...items.map(make));
}

function refreshLists() {
  state.refreshTimer = null;
  if (!state.registered) return;
  if (state.room) { state.pendingWho++; send({ type: "who" }); } else { $("who").replaceChildren(); }
  state.pendingRooms++;
  send({ type: "rooms" });
}

function scheduleRefresh() {
  if (state.refreshTimer === null) state.refreshTimer = setTimeout(refreshLists, LIST_REFRESH_MS);
}

function nickSpan(nick, text) {
  const span = document.createElement("span");
  span.className = "nick";
  span.style.color = nickColour(nick);
  span.textContent = text;
  return span;
}

// FNV-1a over the nick, so nicks a letter apart (pageA, pageB) get far-apart hues.
function nickColour(nick) {
  let h = 0x811c9dc5;
  for (const c of nick) h = Math.imul(h ^ c.codePointAt(0), 0x01000193) >>> 0;
  return "hsl(" + (h % 360) + ", 65%, 42%)";
}

function addLine(time, parts, kind) {
  const log = $("log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  const li = document.createElement("li");
  li.className = kind;
  const stamp = document.createElement("time");
  stamp.className = "time";
  const when = new Date(time);
  stamp.dateTime = when.toISOString();
  stamp.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  li.appendChild(stamp);
  for (const part of parts) li.append(part); // strings become text nodes
  log.appendChild(li);
  while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function setStatus(text, down) {
  const status = $("status");
  status.textContent = text;
  status.className = down ? "down" : "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    state.nick = $("nick").value.trim();
    state.room = $("room").value.trim() || null;
    state.token = $("token").value;
    $("login-error").textContent = "";
    if (state.ws && state.ws.readyState === WebSocket.OPEN) register();
  });
  $("say").addEventListener("submit", (event) => {
    event.preventDefault();
    const line = $("line");
    if (line.value === "") return;
    send({ type: "line", text: line.value });
    line.value = "";
  });
  document.addEventListener("keydown", (event) => {
    // Escape comes back to the input line from anywhere (the room list, the log).
    if (event.key === "Escape" && !$("chat").hidden) $("line").focus();
  });
  connect();
});
