// knowrec web chat: talks to /v1/sessions, /v1/sessions/{id}/messages (streamed: the picks in retrieval order show
// as soon as retrieval has run and are replaced when the LLM's ranking lands) and /v1/feedback. No build step, no CDN.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const conversation = $("conversation");
  const form = $("chat-form");
  const input = $("message");
  const sendButton = $("send");
  const statusLine = $("status");
  const keyField = $("api-key");
  const userField = $("user-id");

  const store = {
    get key() { return localStorage.getItem("knowrec.apiKey") || ""; },
    set key(v) { v ? localStorage.setItem("knowrec.apiKey", v) : localStorage.removeItem("knowrec.apiKey"); },
    get user() { return localStorage.getItem("knowrec.userId") || ""; },
    set user(v) { v ? localStorage.setItem("knowrec.userId", v) : localStorage.removeItem("knowrec.userId"); },
    get session() { return sessionStorage.getItem("knowrec.session") || ""; },
    set session(v) { v ? sessionStorage.setItem("knowrec.session", v) : sessionStorage.removeItem("knowrec.session"); },
  };

  keyField.value = store.key;
  userField.value = store.user;
  keyField.addEventListener("change", () => { store.key = keyField.value.trim(); setStatus("idle", ""); });
  userField.addEventListener("change", () => { store.user = userField.value.trim(); store.session = ""; });

  let busy = false;
  let turns = 0;

  function setStatus(state, text) {
    statusLine.dataset.state = state;
    statusLine.textContent = text;
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children || []) if (c) node.appendChild(c);
    return node;
  }

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || `HTTP ${status}`);
      this.status = status;
      this.type = err.type || "error";
      this.field = err.field || null;
    }
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (store.key) headers["Authorization"] = "Bearer " + store.key;
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  // POST with `stream: true`; calls onEvent(name, data) for each server-sent event as it arrives
  async function streamed(path, body, onEvent) {
    const headers = { "Accept": "text/event-stream", "Content-Type": "application/json" };
    if (store.key) headers["Authorization"] = "Bearer " + store.key;
    const resp = await fetch(path, { method: "POST", headers, body: JSON.stringify({ ...body, stream: true }) });
    if (!resp.ok) {
      let data = null;
      try { data = await resp.json(); } catch (_) { data = null; }
      throw new ApiError(resp.status, data);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  }

  const STAGES = {
    extracting: "Reading your request…",
    retrieving: "Finding candidates…",
    ranking: "Ranking them with the LLM…",
  };

  function scrollDown() {
    const main = conversation.parentElement;
    main.scrollTop = main.scrollHeight;
  }

  function addMessage(role, text, extraClass) {
    const node = el("div", {
      class: `msg msg-${role}` + (extraClass ? " " + extraClass : ""),
      "data-testid": `${role}-message`,
      "data-role": role,
    }, [el("div", { class: "msg-text", text: text })]);
    conversation.appendChild(node);
    scrollDown();
    return node;
  }

  // a label as people write it, as knowrec.types.display_title does: "Lion King, The (1994)" → "The Lion King
  // (1994)", "David Brenner (editor)" → "David Brenner"
  const TITLE_YEAR = /^(.*?)\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$/;
  const TITLE_ALT = /\s*\([^()]*\)\s*$/;
  const TITLE_ARTICLE = /^(.+), (The|A|An|Les|Le|La|Los|Las|Il|El|Das|Der|Die|L')$/;

  function displayLabel(label) {
    const m = TITLE_YEAR.exec(label);
    let base = m ? m[1] : label.trim();
    while (TITLE_ALT.test(base) && base.replace(TITLE_ALT, "")) base = base.replace(TITLE_ALT, "");
    const a = TITLE_ARTICLE.exec(base);
    if (a) base = a[2].endsWith("'") ? a[2] + a[1] : `${a[2]} ${a[1]}`;
    return m ? `${base} (${m[2]})` : base;
  }

  function factText(f) {
    const head = f.head_label ? displayLabel(f.head_label) : f.head;
    const tail = f.tail_label ? (f.relation === "tag" ? f.tail_label : displayLabel(f.tail_label)) : f.tail;
    return `${head} —${f.relation}→ ${tail}`;
  }

  // fact ids ("[F4a453a140f02]") become footnote numbers; the facts are listed, numbered, under the text
  const FACT_REF = /\s*\[(F[0-9a-f]+)\]/g;

  function footnoted(text, order) {
    return text.replace(FACT_REF, (m, id) => {
      if (!order.includes(id)) order.push(id);
      return ` [${order.indexOf(id) + 1}]`;
    });
  }

  function factList(order, facts, testid) {
    return el("ol", { class: "rec-facts", "data-testid": testid }, order.filter((id) => facts.has(id)).map((id) =>
      el("li", { class: "rec-fact", "data-fact-id": id, title: id, value: String(order.indexOf(id) + 1),
        text: factText(facts.get(id)) })));
  }

  function card(item, turnIndex) {
    const facts = new Map((item.facts || []).map((f) => [f.id, f]));
    const order = [];
    const reasons = el("ul", { class: "rec-reasons", "data-testid": "rec-reasons" },
      (item.reasons || []).map((r) => el("li", { class: "rec-reason" }, [
        document.createTextNode(r.text),
        el("sup", { class: "fn", text: (r.fact_ids || []).filter((id) => facts.has(id)).map((id) => {
          if (!order.includes(id)) order.push(id);
          return `[${order.indexOf(id) + 1}]`;
        }).join("") }),
      ])));
    for (const r of item.reasons || []) {
      for (const id of r.context_fact_ids || []) if (facts.has(id) && !order.includes(id)) order.push(id);
    }
    for (const id of facts.keys()) if (!order.includes(id)) order.push(id);
    // plain words, no emoji: a browser without an emoji font shows empty boxes
    const like = el("button", { type: "button", class: "like-btn", "data-testid": "like", text: "Like", title: "More like this" });
    const dislike = el("button", { type: "button", class: "dislike-btn", "data-testid": "dislike", text: "Not for me", title: "Dislike" });
    const node = el("article", {
      class: "rec-card",
      "data-testid": "rec-card",
      "data-item-id": item.item_id,
      "data-turn": String(turnIndex),
    }, [
      el("h3", { class: "rec-title", "data-testid": "rec-title", text: item.display_title || item.title }),
      reasons,
      factList(order, facts, "rec-facts"),
      el("div", { class: "rec-actions" }, [like, dislike]),
    ]);
    like.addEventListener("click", () => feedback(item.item_id, true, node));
    dislike.addEventListener("click", () => feedback(item.item_id, false, node));
    return node;
  }

  // the picks in retrieval order, shown while the LLM ranks them (no reasons yet, no buttons)
  function renderPreliminary(progress) {
    turns += 1;
    const node = addMessage("assistant", progress.text || "", "msg-pending");
    node.dataset.turn = String(turns);
    node.dataset.action = "pending";
    node.appendChild(el("div", { class: "cards", "data-testid": "preliminary-cards" }, progress.items.map((it) =>
      el("article", { class: "rec-card preliminary", "data-testid": "preliminary-card", "data-item-id": it.item_id }, [
        el("h3", { class: "rec-title", text: it.display_title || it.title }),
        el("div", { class: "meta", text: "ranking…" }),
      ]))));
    scrollDown();
    return node;
  }

  function renderTurn(turn, pending) {
    const rec = turn.recommendation;
    const hasCards = rec && rec.items && rec.items.length;
    // with cards, the text keeps its first line and notes: the numbered picks are the cards, not repeated above them
    let text = turn.text || "";
    if (hasCards) text = text.split("\n").filter((line) => !/^\d+\. /.test(line)).join("\n");
    const order = [];
    text = footnoted(text, order);
    let node = pending;
    if (node) {
      node.classList.remove("msg-pending");
      node.replaceChildren(el("div", { class: "msg-text", text: text }));
    } else {
      turns += 1;
      node = addMessage("assistant", text);
      node.dataset.turn = String(turns);
    }
    node.dataset.action = turn.action || "";
    if (hasCards) {
      const index = Number(node.dataset.turn);
      node.appendChild(el("div", { class: "cards", "data-testid": "cards" }, rec.items.map((it) => card(it, index))));
      const meta = `ranking ${rec.ranking_mode} · model ${rec.model}` + (rec.fallback ? ` · fallback: ${rec.fallback_reason}` : "");
      node.appendChild(el("div", { class: "meta", text: meta }));
    } else if (turn.facts && turn.facts.length) {
      const facts = new Map(turn.facts.map((f) => [f.id, f]));
      for (const id of facts.keys()) if (!order.includes(id)) order.push(id);
      node.appendChild(factList(order, facts, "turn-facts"));
    }
    scrollDown();
  }

  function showError(err) {
    if (err.status === 401) {
      setStatus("error", "This server wants an API key: enter it above, then send again.");
      keyField.focus();
    } else {
      setStatus("error", `Error: ${err.message}`);
    }
    addMessage("assistant", `⚠ ${err.message}`, "msg-error");
  }

  async function ensureSession() {
    if (store.session) return store.session;
    const created = await api("POST", "/v1/sessions", { user_id: store.user || null });
    store.session = created.session_id;
    return store.session;
  }

  async function send(text) {
    if (busy || !text) return;
    busy = true;
    sendButton.disabled = true;
    addMessage("user", text);
    setStatus("busy", "Thinking…");
    let pending = null;
    try {
      const sid = await ensureSession();
      let turn = null;
      await streamed(`/v1/sessions/${encodeURIComponent(sid)}/messages`, {
        message: text, user_id: store.user || null, k: 5,
      }, (name, data) => {
        if (name === "progress") {
          setStatus("busy", STAGES[data.stage] || "Thinking…");
          if (data.stage === "ranking" && data.items && data.items.length && !pending) pending = renderPreliminary(data);
        } else if (name === "turn") {
          turn = data;
        } else if (name === "error") {
          throw new ApiError(503, data);
        }
      });
      if (!turn) throw new Error("the answer stream ended without a turn");
      renderTurn(turn, pending);
      setStatus("idle", "");
    } catch (err) {
      if (pending) pending.remove();
      showError(err);
    } finally {
      busy = false;
      sendButton.disabled = false;
      input.focus();
    }
  }

  async function feedback(itemId, liked, node) {
    if (busy) return;
    for (const b of node.querySelectorAll("button")) b.disabled = true;
    try {
      const sid = await ensureSession();
      await api("POST", "/v1/feedback", { item_id: itemId, liked, session_id: sid, user_id: store.user || null });
      node.classList.add(liked ? "liked" : "disliked");
      node.dataset.feedback = liked ? "liked" : "disliked";
    } catch (err) {
      for (const b of node.querySelectorAll("button")) b.disabled = false;
      showError(err);
      return;
    }
    await send("more");  // the next answer reflects the feedback
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    input.value = "";
    send(text);
  });

  $("new-chat").addEventListener("click", () => {
    store.session = "";
    turns = 0;
    for (const n of [...conversation.querySelectorAll(".msg")]) n.remove();
    setStatus("idle", "New conversation.");
    input.focus();
  });

  window.knowrecChat = { send, feedback, displayLabel, get sessionId() { return store.session; } };
})();
