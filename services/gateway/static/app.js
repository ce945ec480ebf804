// The engine's page: submit an order, watch its stages, see the venues' quotes and the route,
// and a table of recent orders kept live over one multiplexed WebSocket (/ws/orders).
// Plain JavaScript, no build step; decimals stay strings end to end.
"use strict";

const STAGES = ["pending", "routing", "building", "submitted", "confirmed", "failed"];
const TERMINAL = new Set(["confirmed", "failed", "expired", "cancelled"]);
const RECENT_ROWS = 25;

const $ = (id) => document.getElementById(id);
const state = {
  tokens: new Map(), // mint -> {symbol, decimals}
  current: null, // order id shown in the live panel
  lastSeq: 0, // the last seq of it shown
  startedAt: null, // its pending timestamp (ms)
  orders: new Map(), // order id -> row data for the recent table
  socket: null,
  retryMs: 500,
};

function apiKey() {
  return $("api-key").value.trim();
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function symbol(mint) {
  const token = state.tokens.get(mint);
  return token ? token.symbol : `${mint.slice(0, 4)}…${mint.slice(-4)}`;
}

// "1.5" percent -> "0.015" as a fraction, by moving the decimal point (never through a float).
function percentToFraction(text) {
  const value = text.trim();
  if (!/^\d+(\.\d+)?$/.test(value)) return null;
  const [whole, fraction = ""] = value.split(".");
  const scale = fraction.length + 2;
  const digits = (whole + fraction).padStart(scale + 1, "0");
  const intPart = digits.slice(0, digits.length - scale).replace(/^0+(?=\d)/, "");
  const fracPart = digits.slice(digits.length - scale).replace(/0+$/, "");
  return fracPart ? `${intPart}.${fracPart}` : intPart;
}

function clock(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function describeError(body, status) {
  const error = body && body.error;
  if (!error) return `HTTP ${status}`;
  const details = (error.details || []).map((d) => `${d.field}: ${d.issue}`).join("; ");
  return details ? `${error.message} — ${details}` : error.message;
}

// ---- tokens

async function loadTokens() {
  try {
    const resp = await fetch("/api/tokens", { headers: headers() });
    if (!resp.ok) throw new Error(describeError(await resp.json().catch(() => null), resp.status));
    const body = await resp.json();
    state.tokens = new Map(body.tokens.map((t) => [t.mint, t]));
  } catch (err) {
    $("form-error").textContent = `Could not load tokens: ${err.message}`;
    return;
  }
  for (const [id, preferred] of [["token-in", "SOL"], ["token-out", "USDC"]]) {
    const select = $(id);
    select.replaceChildren();
    for (const token of state.tokens.values()) {
      const option = new Option(`${token.symbol}`, token.mint, false, token.symbol === preferred);
      select.append(option);
    }
  }
  updateUnit();
}

function updateUnit() {
  const token = state.tokens.get($("token-in").value);
  $("amount-unit").textContent = token ? `(${token.symbol})` : "";
}

// ---- submit

async function submit(event) {
  event.preventDefault();
  const error = $("form-error");
  error.textContent = "";
  const slippage = percentToFraction($("slippage").value);
  if (slippage === null) {
    error.textContent = "Slippage must be a number of percent, e.g. 1 or 0.5.";
    $("slippage").focus();
    return;
  }
  const body = {
    tokenIn: $("token-in").value,
    tokenOut: $("token-out").value,
    amountIn: $("amount").value.trim(),
    slippage,
  };
  const button = $("submit");
  button.disabled = true;
  try {
    const resp = await fetch("/api/orders/execute", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() }),
      body: JSON.stringify(body),
    });
    const answer = await resp.json().catch(() => null);
    if (resp.status !== 201) {
      error.textContent = describeError(answer, resp.status);
      return;
    }
    showOrder(answer.orderId);
    fillFromHistory(answer.orderId); // whatever the socket brought before the page knew this order
    upsertRow({ orderId: answer.orderId, tokenIn: body.tokenIn, tokenOut: body.tokenOut, amountIn: body.amountIn,
      status: answer.status });
    send({ subscribe: [answer.orderId] });
  } catch (err) {
    error.textContent = `Could not submit: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// ---- live panel

function showOrder(orderId) {
  state.current = orderId;
  state.startedAt = null;
  state.lastSeq = 0;
  $("live-id").textContent = orderId;
  for (const li of $("stages").children) {
    li.className = "";
    li.querySelector("time").textContent = "";
    li.querySelector("time").removeAttribute("datetime");
  }
  $("live-status").textContent = "Submitted; waiting for its first update…";
  renderQuotes(null);
}

function stageTime(status, timestamp) {
  const li = $("stages").querySelector(`[data-stage="${status}"]`);
  if (!li || !timestamp) return;
  const time = li.querySelector("time");
  time.dateTime = timestamp;
  const elapsed = state.startedAt ? ` +${((Date.parse(timestamp) - state.startedAt) / 1000).toFixed(3)} s` : "";
  time.textContent = `${clock(timestamp)}${elapsed}`;
}

// Events can reach the socket before the page knows the order (its POST answer comes later), and a
// subscription's snapshot may stand for stages that went by: the order's history fills what the live
// stream did not show. Newer events are applied in full; older ones only add a missing time or quotes.
async function fillFromHistory(orderId) {
  try {
    const resp = await fetch(`/api/orders/${orderId}`, { headers: headers() });
    if (!resp.ok) return;
    const order = await resp.json();
    if (state.current !== orderId) return;
    if (order.createdAt) state.startedAt = Date.parse(order.createdAt);
    for (const event of order.history || []) {
      if (event.seq > state.lastSeq) {
        showEvent(event);
        continue;
      }
      const li = $("stages").querySelector(`[data-stage="${event.status}"]`);
      if (li && !li.querySelector("time").textContent) stageTime(event.status, event.timestamp);
      if (event.status === "building" && !$("quotes").querySelector("tr.chosen")) renderQuotes(event.data);
    }
  } catch (err) {
    // The live stream goes on; a missing time is not worth an error.
  }
}

function markStage(status, timestamp, data) {
  const index = STAGES.indexOf(status);
  const items = [...$("stages").children];
  if (!state.startedAt && timestamp) state.startedAt = Date.parse(timestamp) - 0;
  items.forEach((li, i) => {
    const stage = li.dataset.stage;
    li.classList.remove("current");
    if (status === "failed") {
      if (stage === "failed") li.classList.add("done", "failed", "current");
    } else if (i < index && stage !== "failed") {
      li.classList.add("done");
    }
  });
  const li = items[index];
  if (li) {
    if (status !== "failed") li.classList.add(TERMINAL.has(status) ? "done" : "current");
    stageTime(status, timestamp);
  }
  const attempt = data && data.attempt > 1 ? ` (attempt ${data.attempt})` : "";
  let text = `Status: ${status}${attempt}.`;
  if (status === "confirmed") text = `Status: confirmed — ${data.amountOut || "?"} out at ${data.executedPrice || "?"} on ${data.venue || "?"}.`;
  if (status === "failed") text = `Status: failed — ${(data && (data.reason || data.code)) || "see the order"}.`;
  if (status === "waiting") text = `Status: waiting — armed until ${(data && data.expiresAt) || "it expires"}.`;
  if (status === "expired") text = `Status: expired — its trigger never fired (at ${(data && data.expiresAt) || "?"}).`;
  if (status === "cancelled") text = "Status: cancelled.";
  $("live-status").textContent = text;
}

function renderQuotes(routing) {
  const body = $("quotes").tBodies[0];
  body.replaceChildren();
  $("route").textContent = "";
  if (!routing || !Array.isArray(routing.quotes) || routing.quotes.length === 0) {
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.colSpan = 5;
    cell.className = "empty";
    cell.textContent = "No quotes yet.";
    return;
  }
  const chosen = new Set((routing.legs || []).map((leg) => leg.venue));
  for (const quote of routing.quotes) {
    const row = body.insertRow();
    if (chosen.has(quote.venue)) row.className = "chosen";
    for (const value of [quote.venue, quote.amountOut, quote.price, quote.fee, quote.priceImpact]) {
      row.insertCell().textContent = value ?? "";
    }
  }
  const excluded = Object.entries(routing.excluded || {}).map(([venue, why]) => `${venue} excluded: ${why}`);
  const legs = (routing.legs || []).map((leg) => `${leg.venue} ${leg.amountIn} → ${leg.amountOut}`).join(", ");
  $("route").textContent = `Route: ${routing.venue || "?"}${legs ? ` (${legs})` : ""}. ${routing.reason || ""} ${excluded.join("; ")}`.trim();
}

// ---- recent orders

function upsertRow(update) {
  const known = state.orders.get(update.orderId) || {};
  const row = { ...known, ...Object.fromEntries(Object.entries(update).filter(([, v]) => v !== undefined && v !== null)) };
  state.orders.set(update.orderId, row);
  renderRecent();
}

function renderRecent() {
  const rows = [...state.orders.values()]
    .sort((a, b) => (b.createdAt || "9").localeCompare(a.createdAt || "9"))
    .slice(0, RECENT_ROWS);
  const body = $("recent").tBodies[0];
  body.replaceChildren();
  for (const order of rows) {
    const row = body.insertRow();
    row.dataset.orderId = order.orderId;
    const id = row.insertCell();
    const code = document.createElement("code");
    code.textContent = order.orderId.slice(0, 8);
    code.title = order.orderId;
    id.append(code);
    row.insertCell().textContent = order.tokenIn ? `${symbol(order.tokenIn)} → ${symbol(order.tokenOut)}` : "";
    row.insertCell().textContent = order.amountIn || "";
    const status = row.insertCell();
    status.className = `status status-${order.status}`;
    status.textContent = order.status || "";
    row.insertCell().textContent = order.dexProvider || "";
    row.insertCell().textContent = order.amountOut || "";
    const updated = row.insertCell();
    updated.textContent = clock(order.updatedAt);
  }
}

async function loadRecent() {
  try {
    const resp = await fetch(`/api/orders?limit=${RECENT_ROWS}`, { headers: headers() });
    if (!resp.ok) throw new Error(describeError(await resp.json().catch(() => null), resp.status));
    const body = await resp.json();
    for (const order of body.orders) upsertRow(order);
  } catch (err) {
    $("form-error").textContent = `Could not load recent orders: ${err.message}`;
  }
}

// ---- the multiplexed socket

function onEvent(event) {
  const data = event.data || {};
  const order = data.snapshot ? data.order : null;
  const update = { orderId: event.orderId, status: event.status, updatedAt: event.timestamp };
  if (order) Object.assign(update, order);
  if (event.status === "pending" && !order) {
    Object.assign(update, { tokenIn: data.tokenIn, tokenOut: data.tokenOut, amountIn: data.amountIn, createdAt: event.timestamp });
  }
  if (event.status === "confirmed") Object.assign(update, { amountOut: data.amountOut, dexProvider: data.venue });
  if (event.status === "building") update.dexProvider = data.venue;
  upsertRow(update);
  if (event.orderId !== state.current || event.seq <= state.lastSeq) return;
  const gap = event.seq > state.lastSeq + 1;
  showEvent(event);
  if (gap) fillFromHistory(event.orderId);
}

// The live panel shows one more event of its order (newer than any it showed).
function showEvent(event) {
  const data = event.data || {};
  const order = data.snapshot ? data.order : null;
  state.lastSeq = event.seq;
  if (order && order.createdAt) state.startedAt = Date.parse(order.createdAt);
  if (event.status === "building") renderQuotes(data);
  else if (order && order.routing) renderQuotes(order.routing);
  markStage(event.status, event.timestamp, data);
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey();
  const protocols = key ? ["dexengine.v1", `dexengine.bearer.${key}`] : ["dexengine.v1"];
  const socket = new WebSocket(`${scheme}://${location.host}/ws/orders`, protocols);
  state.socket = socket;
  const status = $("connection");
  socket.addEventListener("open", () => {
    state.retryMs = 500;
    status.textContent = "live";
    status.className = "connection up";
    send({ subscribe: "mine" });
    if (state.current) send({ subscribe: [state.current] });
  });
  socket.addEventListener("message", (message) => {
    const body = JSON.parse(message.data);
    if (body.error) {
      if (body.orderId !== undefined || body.error.code !== "SUBSCRIPTION_CANCELLED") {
        $("form-error").textContent = describeError(body, 0);
      }
      return;
    }
    if (body.orderId && body.status) onEvent(body);
  });
  socket.addEventListener("close", (event) => {
    if (state.socket !== socket) return;
    status.textContent = event.code === 1013 ? "reconnecting…" : `disconnected (${event.code}); reconnecting…`;
    status.className = "connection down";
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 10000);
  });
}

function reconnect() {
  const old = state.socket;
  state.socket = null;
  if (old) old.close();
  connect();
}

document.addEventListener("DOMContentLoaded", async () => {
  $("order-form").addEventListener("submit", submit);
  $("token-in").addEventListener("change", updateUnit);
  $("api-key").addEventListener("change", async () => {
    $("form-error").textContent = "";
    await loadTokens();
    state.orders.clear();
    await loadRecent();
    reconnect();
  });
  await loadTokens();
  await loadRecent();
  connect();
});
