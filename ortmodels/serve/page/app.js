// The page of `ortmodels serve`: chat over /v1/chat/completions (streamed), the models of
// /v1/models and a few figures of /metrics. Every text from the server or a model is set
// with textContent, never parsed as HTML.

const $ = (id) => document.getElementById(id);
const conversation = []; // {role, content} of every finished turn, sent again each turn
let running = null; // the AbortController of the answer being streamed
let chats = 0; // bumped by "New chat": an answer still ending then is not kept

function headers() {
  const key = $("key").value.trim();
  const found = { "Content-Type": "application/json" };
  if (key) found.Authorization = `Bearer ${key}`;
  return found;
}

function status(text) {
  $("status").textContent = text;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? body.detail ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// -- models -------------------------------------------------------------------------------

const variants = new Map(); // chat model name -> its precision tags

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    status(`Models: ${await errorText(response)}`);
    return;
  }
  const models = new Map(); // name -> {kind, tags: [{tag, loaded}], loaded}
  for (const card of (await response.json()).data) {
    if (!card.exported) continue;
    const [name, tag] = card.id.split(":");
    const entry = models.get(name) ?? { kind: card.kind, tags: [], loaded: false };
    if (tag) entry.tags.push({ tag, loaded: card.loaded });
    else entry.loaded = card.loaded;
    models.set(name, entry);
  }
  const list = $("models");
  list.replaceChildren();
  variants.clear();
  for (const [name, entry] of models) {
    const item = document.createElement("li");
    item.dataset.model = name;
    const title = document.createElement("strong");
    title.textContent = name;
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = ` ${entry.kind}${entry.loaded ? " · loaded" : ""}`;
    const tags = document.createElement("span");
    tags.className = "tags";
    for (const { tag, loaded } of entry.tags) {
      const chip = document.createElement("span");
      chip.className = loaded ? "tag loaded" : "tag";
      chip.dataset.variant = tag;
      chip.title = loaded ? "loaded" : "loads on first use";
      chip.textContent = tag;
      tags.append(chip);
    }
    item.append(title, kind, tags);
    list.append(item);
    if (entry.kind === "chat") variants.set(name, entry.tags.map((t) => t.tag));
  }
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(...[...variants.keys()].map((name) => new Option(name, name)));
  if (variants.has(chosen)) select.value = chosen;
  showVariants();
  status(variants.size ? "" : "No chat model is exported on this server.");
}

function showVariants() {
  const select = $("variant");
  const chosen = select.value;
  const tags = variants.get($("model").value) ?? [];
  select.replaceChildren(new Option("default", ""), ...tags.map((tag) => new Option(tag, tag)));
  if (tags.includes(chosen)) select.value = chosen;
}

// -- chat ---------------------------------------------------------------------------------

function addMessage(role, text) {
  const box = document.createElement("div");
  box.className = `msg ${role}`;
  box.dataset.role = role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  box.append(who, body);
  $("log").append(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

// The events of an SSE body, one parsed `data:` payload at a time ("[DONE]" ends it).
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

async function send() {
  const question = $("prompt").value;
  if (running || !question.trim() || !$("model").value) return;
  $("prompt").value = "";
  addMessage("user", question);
  conversation.push({ role: "user", content: question });
  const system = $("system").value.trim();
  const tag = $("variant").value;
  const body = {
    model: tag ? `${$("model").value}:${tag}` : $("model").value,
    messages: [...(system ? [{ role: "system", content: system }] : []), ...conversation],
    max_tokens: Number($("max-tokens").value) || undefined,
    stream: true,
  };
  const box = addMessage("assistant", "");
  const text = box.querySelector(".text");
  box.dataset.state = "waiting";
  box.dataset.updates = "0";
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  let answer = "";
  const chat = chats;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    box.dataset.state = "streaming";
    for await (const chunk of events(response.body)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices?.[0];
      const reasoning = choice?.delta?.reasoning_content;
      if (reasoning) { // a reasoning model's thinking: shown apart, folded, never sent back
        let details = box.querySelector("details.thinking");
        if (!details) {
          details = document.createElement("details");
          details.className = "thinking";
          const summary = document.createElement("summary");
          summary.textContent = "reasoning";
          const thought = document.createElement("div");
          thought.className = "thought";
          details.append(summary, thought);
          box.insertBefore(details, text);
        }
        const thought = details.querySelector(".thought");
        thought.textContent += reasoning;
        box.dataset.updates = String(Number(box.dataset.updates) + 1);
      }
      if (choice?.delta?.content) {
        answer += choice.delta.content;
        text.textContent = answer;
        box.dataset.updates = String(Number(box.dataset.updates) + 1);
      }
      if (choice?.finish_reason) box.dataset.finish = choice.finish_reason;
    }
    box.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      box.dataset.state = "stopped";
    } else {
      box.dataset.state = "error";
      const note = document.createElement("div");
      note.className = "error";
      note.textContent = error.message;
      box.append(note);
    }
  } finally {
    if (chat === chats) { // not a conversation "New chat" has since cleared
      if (answer) conversation.push({ role: "assistant", content: answer });
      else conversation.pop(); // no answer (stopped at once, or an error): the question is not kept
    }
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    refreshFigures();
    loadModels(); // a variant loaded for this answer now shows as loaded
  }
}

// -- figures from /metrics ----------------------------------------------------------------

// Prometheus' text exposition: [{name, labels, value}] of every sample line.
function samples(text) {
  const found = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value;
    found.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return found;
}

const sum = (rows, name) => rows.filter((r) => r.name === name).reduce((total, r) => total + r.value, 0);
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function setFigure(name, text) {
  $("figures").querySelector(`[data-figure="${name}"]`).textContent = text;
}

async function refreshFigures() {
  let rows;
  try {
    const response = await fetch("/metrics");
    if (!response.ok) return;
    rows = samples(await response.text());
  } catch {
    return; // the server is restarting or gone: the figures stay as they were
  }
  const loaded = new Set(rows.filter((r) => r.name === "ortmodels_loaded" && r.value > 0)
    .map((r) => `${r.labels.model}:${r.labels.variant}`));
  const memory = rows.filter((r) => r.name === "ortmodels_memory_bytes" && loaded.has(`${r.labels.model}:${r.labels.variant}`));
  const speeds = rows.filter((r) => r.name === "ortmodels_tokens_per_second").map((r) => r.value);
  setFigure("requests", String(sum(rows, "ortmodels_calls_total")));
  setFigure("in-flight", String(sum(rows, "ortmodels_server_requests_in_flight")));
  setFigure("sequences", String(sum(rows, "ortmodels_engine_running_requests")));
  setFigure("tokens", String(sum(rows, "ortmodels_output_tokens_total")));
  setFigure("tokens-per-second", speeds.length ? Math.max(...speeds).toFixed(1) : "–");
  setFigure("kv-cache", `${mib(sum(rows, "ortmodels_engine_kv_cache_bytes"))} of ${mib(sum(rows, "ortmodels_engine_kv_cache_limit_bytes"))}`);
  setFigure("memory", mib(memory.reduce((total, r) => total + r.value, 0)));
  $("figures").dataset.updated = String(Date.now());
}

// -- wiring -------------------------------------------------------------------------------

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", () => running?.abort());
$("clear").addEventListener("click", () => {
  running?.abort();
  chats += 1;
  conversation.length = 0;
  $("log").replaceChildren();
});
$("model").addEventListener("change", showVariants);
$("key").addEventListener("change", loadModels);
$("settings").addEventListener("submit", (event) => event.preventDefault());

loadModels();
refreshFigures();
setInterval(refreshFigures, 3000);
