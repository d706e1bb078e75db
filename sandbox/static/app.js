// The sandbox page: a Discord-like channel view over the scripting API (/api/*). It holds
// no state of its own beyond the current selection; the server is the source of truth and
// is polled, so what you see is what the bot actually sent.
"use strict";

const S = { state: null, server: null, channel: null, user: null, pending: null,
            replyTo: null, command: null, lastJson: "", view: "", names: {} };
const $ = (sel) => document.querySelector(sel);
const OPTION = { STRING: 3, INTEGER: 4, BOOLEAN: 5, NUMBER: 10, ATTACHMENT: 11 };

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function toast(text) {
  const note = $("#notice");
  note.hidden = false;
  note.textContent = text;
  setTimeout(() => showNotice(), 6000);
}

function showNotice() {
  const note = $("#notice");
  note.textContent = S.state && S.state.notice ? S.state.notice : "";
  note.hidden = !note.textContent;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// --- state: servers, channels, users, commands -------------------------------------------

async function loadState() {
  try { S.state = await api("GET", "/api/state"); } catch (e) { return; }
  const st = S.state;
  S.names = { [st.bot.id]: st.bot.name };
  for (const u of st.users) S.names[u.id] = u.name;
  if (!S.server) S.server = st.servers[0].id;
  if (!S.user) S.user = st.users[0].id;
  renderServers(); showNotice();
  const status = $("#bot-status");
  const online = st.bot.connected && st.bot.model_ready;
  status.textContent = online ? "Palicord is online"
    : st.bot.connected ? "Loading the model… (until then Palicord answers that no worker is online)" : "Palicord is starting…";
  status.classList.toggle("online", online);
  if (!$("#samples button")) renderSamples();
}

function renderServers() {
  const st = S.state;
  const nav = $("#servers"); nav.replaceChildren();
  for (const srv of st.servers) {
    nav.append(el("button", { class: srv.id === S.server ? "active" : "", title: srv.name,
      "data-server": srv.id, onclick: () => { S.server = srv.id; S.channel = null; renderServers(); } },
      srv.name.split(/\s+/).map((w) => w[0]).join("").slice(0, 3)));
  }
  const server = st.servers.find((s) => s.id === S.server);
  $("#server-name").textContent = server.name;
  if (!S.channel) { S.channel = server.channels[0].id; S.lastJson = ""; }
  const list = $("#channels"); list.replaceChildren();
  for (const ch of server.channels) {
    list.append(el("li", { class: ch.id === S.channel ? "active" : "", "data-channel": ch.id,
      onclick: () => { S.channel = ch.id; S.lastJson = ""; renderServers(); } }, `# ${ch.name}`));
  }
  const channel = server.channels.find((c) => c.id === S.channel);
  $("#channel-name").textContent = `# ${channel.name} — ${server.name}`;
  $("#text").placeholder = `Message #${channel.name} — type / for commands, @${st.bot.name} to ask`;
  const select = $("#user");
  if (!select.options.length) {
    for (const u of st.users) select.append(el("option", { value: u.id }, u.admin ? `${u.name} (admin)` : u.name));
    select.addEventListener("change", () => { S.user = select.value; S.lastJson = ""; });
  }
}

function renderSamples() {
  const box = $("#samples");
  for (const url of S.state.samples) {
    const name = url.split("/").pop();
    box.append(el("button", { type: "button", title: `Attach ${name}`, "data-sample": url,
      onclick: async () => {
        const blob = await (await fetch(url)).blob();
        await upload(new File([blob], name, { type: blob.type || "image/png" }));
      } }, el("img", { src: url, alt: "" })));
    // A link instead of an upload: Discord (here, the sandbox) previews it a moment later.
    box.append(el("button", { type: "button", class: "as-link", title: `Paste a link to ${name}`,
      "data-sample-link": url, onclick: () => insertText(`${location.origin}${url}`) }, "🔗"));
  }
  const stickers = S.state.stickers || [];
  if (stickers.length) box.append(el("span", {}, "Stickers:"));
  for (const st of stickers) {
    box.append(el("button", { type: "button", title: `Send the sticker ${st.name} (with your text)`,
      "data-sticker": st.id, onclick: () => sendSticker(st) },
      st.url ? el("img", { src: st.url, alt: st.name }) : el("span", { class: "lottie" }, st.name)));
  }
  const emojis = S.state.emojis || [];
  if (emojis.length) box.append(el("span", {}, "Emoji:"));
  for (const markup of emojis) {
    box.append(el("button", { type: "button", title: `Insert ${markup}`, "data-emoji": markup,
      onclick: () => insertText(markup) }, el("img", { src: emojiUrl(markup), alt: markup })));
  }
}

function insertText(text) {
  const area = $("#text");
  area.value = `${area.value}${area.value && !area.value.endsWith(" ") ? " " : ""}${text} `;
  area.focus();
}

function emojiUrl(markup) {
  const m = /^<(a?):\w+:(\d+)>$/.exec(markup);
  return m ? `${S.state.cdn_url}/emojis/${m[2]}.${m[1] ? "gif" : "png"}` : "";
}

// --- messages ------------------------------------------------------------------------------

function mentionsToHtml(text) {
  const escaped = text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  return escaped
    .replace(/&lt;@!?(\d+)&gt;/g, (_, id) => `<span class="mention">@${S.names[id] || "unknown"}</span>`)
    .replace(/&lt;(a?):(\w+):(\d+)&gt;/g, (_, a, name, id) =>
      `<img class="emoji" alt=":${name}:" src="${S.state.cdn_url}/emojis/${id}.${a ? "gif" : "png"}">`);
}

function textNode(text, cls) {
  const node = el("div", { class: cls });
  node.innerHTML = mentionsToHtml(text);
  return node;
}

function renderEmbed(embed, files) {
  const box = el("div", { class: "embed" });
  if (embed.color !== undefined && embed.color !== null) box.style.borderLeftColor = `#${embed.color.toString(16).padStart(6, "0")}`;
  if (embed.title) box.append(textNode(embed.title, "title"));
  if (embed.description) box.append(textNode(embed.description, "description"));
  for (const f of embed.fields || []) {
    box.append(el("div", { class: "field" }, textNode(f.name, "field-name"), textNode(f.value, "field-value")));
  }
  // A link's preview shows its picture from Discord's media proxy (the thumbnail).
  const thumb = embed.thumbnail && (embed.thumbnail.proxy_url || embed.thumbnail.url);
  if (thumb && !(embed.image && embed.image.url)) box.append(el("img", { class: "preview", src: thumb, alt: "preview" }));
  const image = embed.image && embed.image.url;
  if (image) {
    const name = image.startsWith("attachment://") ? image.slice(13) : null;
    const file = name ? files.find((a) => a.filename === name) : null;
    if (name && file) files.splice(files.indexOf(file), 1);
    box.append(el("img", { src: file ? file.url : image, alt: name || "image" }));
  }
  if (embed.footer && embed.footer.text) box.append(textNode(embed.footer.text, "footer"));
  return box;
}

function renderMessage(m, byId) {
  const files = [...m.attachments];
  const item = el("li", { class: `msg${m.ephemeral ? " ephemeral" : ""}`, "data-id": m.id,
    oncontextmenu: (ev) => { ev.preventDefault(); openMenu(ev.clientX, ev.clientY, m); } });
  if (m.reply_to) {
    const ref = byId[m.reply_to];
    item.append(el("div", { class: "reply-ref" }, `↪ replying to ${ref ? ref.author.name : "a message"}`));
  }
  if (m.interaction_user) {
    const used = m.command ? `${m.interaction_user.name} used ${m.command}` : `${m.interaction_user.name} used a command`;
    item.append(el("div", { class: "via" }, used));
  }
  item.append(el("div", { class: "head" },
    m.author.avatar_url ? el("img", { class: "avatar", src: m.author.avatar_url, alt: "",
      onerror: (ev) => ev.target.remove() }) : null,  // Discord's CDN: not reachable offline
    el("span", { class: "name" }, m.author.name),
    m.author.bot ? el("span", { class: "bot-tag" }, "APP") : null,
    el("span", { class: "time" }, new Date(m.timestamp).toLocaleTimeString()),
    m.edited ? el("span", { class: "edited" }, "(edited)") : null));
  if (m.thinking) item.append(el("div", { class: "thinking" }, `${m.author.name} is thinking…`));
  if (m.content) item.append(textNode(m.content, "content"));
  for (const e of m.embeds) item.append(renderEmbed(e, files));
  const box = el("div", { class: "files" });
  for (const a of files) {
    if ((a.content_type || "").startsWith("image/") && a.description) {
      // Alt text, as a screen reader reads it and, so that everyone sees it, under the picture.
      box.append(el("figure", { class: "described" }, el("img", { src: a.url, alt: a.description, title: a.description }),
        el("figcaption", {}, el("span", { class: "alt-tag" }, "ALT"), a.description)));
    } else if ((a.content_type || "").startsWith("image/")) box.append(el("img", { src: a.url, alt: a.filename }));
    else box.append(el("a", { href: a.url, target: "_blank", download: a.filename }, `Attachment: ${a.filename}`));
  }
  if (files.length) item.append(box);
  for (const st of m.stickers || []) {
    const known = (S.state.stickers || []).find((k) => k.id === st.id);
    item.append(el("div", { class: "sticker" }, known && known.url
      ? el("img", { src: known.url, alt: st.name }) : `[sticker: ${st.name}]`));
  }
  for (const row of m.buttons || []) {
    item.append(el("div", { class: "buttons-row" }, ...row.map((b) => el("button", {
      type: "button", class: `component style-${b.style}`, "data-custom-id": b.custom_id,
      onclick: () => interact({ channel_id: S.channel, user_id: S.user, message_id: m.id, custom_id: b.custom_id }),
    }, b.label))));
  }
  if (m.ephemeral) item.append(el("div", { class: "ephemeral-note" }, "Only you can see this"));
  item.append(el("div", { class: "actions" },
    el("button", { type: "button", class: "reply", onclick: () => setReply(m) }, "Reply"),
    el("button", { type: "button", class: "apps", onclick: (ev) => openMenu(ev.clientX, ev.clientY, m) }, "Apps ▸")));
  return item;
}

const rendered = new Map();  // message id → { json, node }: only changed messages re-render

async function pollMessages() {
  if (!S.channel) return;
  const channel = S.channel;
  let messages;
  try { messages = await api("GET", `/api/channels/${channel}/messages`); } catch (e) { return; }
  if (channel !== S.channel) return;
  const visible = messages.filter((m) => !m.ephemeral || m.visible_to === S.user);
  const key = JSON.stringify([S.user, channel, visible]);
  if (key === S.lastJson) return;
  const list = $("#messages");
  const view = `${S.user}/${channel}`;
  if (S.view !== view) { S.view = view; rendered.clear(); list.replaceChildren(); }
  S.lastJson = key;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const byId = Object.fromEntries(messages.map((m) => [m.id, m]));
  const keep = new Set(visible.map((m) => m.id));
  for (const [id, entry] of rendered) if (!keep.has(id)) { entry.node.remove(); rendered.delete(id); }
  let previous = null;
  for (const m of visible) {
    const json = JSON.stringify(m);
    let entry = rendered.get(m.id);
    if (!entry || entry.json !== json) {
      const node = renderMessage(m, byId);
      if (entry) entry.node.replaceWith(node);
      entry = { json, node };
      rendered.set(m.id, entry);
    }
    const expected = previous ? previous.nextSibling : list.firstChild;
    if (expected !== entry.node) list.insertBefore(entry.node, expected);
    previous = entry.node;
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// --- composing: text, pictures, replies ------------------------------------------------------

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    S.pending = await api("POST", "/api/attachments", form);
  } catch (e) { toast(`Upload failed: ${e.message}`); return; }
  const box = $("#pending"); box.hidden = false;
  box.replaceChildren(
    (S.pending.content_type || "").startsWith("image/") ? el("img", { src: S.pending.url, alt: "" }) : null,
    el("span", {}, S.pending.filename),
    el("input", { id: "alt-text", type: "text", placeholder: "Alt text (optional)", maxlength: "1024" }),
    el("button", { type: "button", onclick: clearPending }, "remove"));
  if (S.command) openCommand(S.command);  // refresh the attachment field
}

function clearPending() { S.pending = null; $("#pending").hidden = true; }

async function sendSticker(sticker) {
  const body = { channel_id: S.channel, user_id: S.user, content: $("#text").value.trim(),
                 attachment_ids: [], sticker_ids: [sticker.id] };
  if (S.replyTo) body.reply_to = S.replyTo.id;
  try { await api("POST", "/api/messages", body); } catch (e) { toast(e.message); return; }
  $("#text").value = ""; S.replyTo = null; $("#replying").hidden = true;
  pollMessages();
}

function setReply(m) {
  S.replyTo = m;
  const box = $("#replying"); box.hidden = false;
  box.querySelector("span").textContent = `Replying to ${m.author.name}`;
  $("#text").focus();
}

async function send(ev) {
  ev.preventDefault();
  const text = $("#text").value.trim();
  if (text.startsWith("/")) { const cmd = matchingCommands(text)[0]; if (cmd) openCommand(cmd); return; }
  if (!text && !S.pending) return;
  const body = { channel_id: S.channel, user_id: S.user, content: text,
                 attachment_ids: S.pending ? [S.pending.id] : [] };
  const alt = S.pending && $("#alt-text") ? $("#alt-text").value.trim() : "";
  if (alt) body.descriptions = { [S.pending.id]: alt };
  if (S.replyTo) body.reply_to = S.replyTo.id;
  try { await api("POST", "/api/messages", body); } catch (e) { toast(e.message); return; }
  $("#text").value = ""; clearPending(); S.replyTo = null; $("#replying").hidden = true;
  pollMessages();
}

// --- slash commands ----------------------------------------------------------------------------

function slashCommands() { return (S.state ? S.state.commands : []).filter((c) => (c.type || 1) === 1); }

function matchingCommands(text) {
  const word = text.slice(1).split(/\s/)[0].toLowerCase();
  return slashCommands().filter((c) => c.name.startsWith(word));
}

function onType() {
  const text = $("#text").value;
  const list = $("#command-list");
  if (!text.startsWith("/") || S.command) { list.hidden = true; return; }
  list.replaceChildren(...matchingCommands(text).map((c) => el("li", { "data-command": c.name,
    onclick: () => openCommand(c) }, `/${c.name}`, el("span", { class: "desc" }, c.description || ""))));
  list.hidden = !list.children.length;
}

function openCommand(cmd) {
  S.command = cmd;
  $("#command-list").hidden = true;
  const panel = $("#command-panel"); panel.hidden = false;
  panel.querySelector(".command-title").textContent = `/${cmd.name} — ${cmd.description || ""}`;
  const form = $("#command-form"); form.replaceChildren();
  for (const opt of cmd.options || []) {
    const label = el("label", { for: `opt-${opt.name}` }, `${opt.name}${opt.required ? " *" : ""}`);
    let input;
    if (opt.type === OPTION.ATTACHMENT) {
      input = el("span", { "data-option": opt.name },
        S.pending ? el("span", { class: "using" }, `using ${S.pending.filename}`) : el("span", {}, "attach a picture below (+, paste, drop or a sample)"));
    } else if (opt.choices && opt.choices.length) {
      input = el("select", { id: `opt-${opt.name}`, name: opt.name, "data-option": opt.name },
        el("option", { value: "" }, "—"), ...opt.choices.map((ch) => el("option", { value: ch.value }, ch.name)));
    } else if (opt.type === OPTION.BOOLEAN) {
      input = el("select", { id: `opt-${opt.name}`, name: opt.name, "data-option": opt.name },
        el("option", { value: "" }, "—"), el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
    } else {
      input = el("input", { id: `opt-${opt.name}`, name: opt.name, "data-option": opt.name,
        placeholder: opt.description || "", autocomplete: "off",
        type: opt.type === OPTION.INTEGER || opt.type === OPTION.NUMBER ? "number" : "text" });
      if (opt.autocomplete) input.addEventListener("input", () => suggest(cmd, opt.name, input));
    }
    form.append(label, input);
    if (opt.autocomplete) form.append(el("div", { class: "choices", "data-choices": opt.name }));
  }
  form.append(el("div", { class: "buttons" },
    el("button", { type: "button", onclick: closeCommand }, "Cancel"),
    el("button", { type: "submit", id: "run-command" }, `Run /${cmd.name}`)));
}

function closeCommand() {
  S.command = null; $("#command-panel").hidden = true; $("#text").value = "";
}

function formOptions() {
  const options = {};
  for (const input of $("#command-form").querySelectorAll("input[name], select[name]")) {
    if (input.value !== "") options[input.name] = input.value;
  }
  return options;
}

let suggestTimer = null;
function suggest(cmd, name, input) {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(async () => {
    const body = { channel_id: S.channel, user_id: S.user, command: cmd.name, focused: name,
                   options: { ...formOptions(), [name]: input.value } };
    let choices = [];
    try { choices = (await api("POST", "/api/autocomplete", body)).choices; } catch (e) { return; }
    const box = $(`[data-choices="${name}"]`);
    box.replaceChildren(...choices.map((ch) => el("button", { type: "button", "data-value": ch.value,
      onclick: () => { input.value = ch.value; box.replaceChildren(); } }, ch.name)));
  }, 150);
}

async function runCommand(ev) {
  ev.preventDefault();
  const cmd = S.command;
  const options = formOptions();
  for (const opt of cmd.options || []) {
    if (opt.type === OPTION.ATTACHMENT && S.pending) options[opt.name] = S.pending.id;
  }
  await interact({ channel_id: S.channel, user_id: S.user, command: cmd.name, options });
  closeCommand(); clearPending();
}

async function interact(body) {
  let result;
  try { result = await api("POST", "/api/interactions", body); } catch (e) { toast(e.message); return; }
  if (!result.acknowledged) toast("The application did not respond");
  if (result.modal) openModal(result.modal);
  pollMessages();
}

// --- context menus and modals -----------------------------------------------------------------

function openMenu(x, y, message) {
  const menu = $("#menu");
  const apps = (S.state ? S.state.commands : []).filter((c) => c.type === 3);
  menu.replaceChildren(el("div", { class: "label" }, "Apps"), ...apps.map((c) => el("button", {
    type: "button", "data-menu": c.name,
    onclick: () => { menu.hidden = true;
      interact({ channel_id: S.channel, user_id: S.user, command: c.name, target_message_id: message.id }); } },
    c.name)));
  menu.style.left = `${Math.min(x, innerWidth - 220)}px`;
  menu.style.top = `${Math.min(y, innerHeight - 40 - 32 * apps.length)}px`;
  menu.hidden = false;
}

function openModal(modal) {
  const form = $("#modal");
  form.replaceChildren(el("h2", {}, modal.title || "Palicord"));
  for (const f of modal.fields) {
    const input = f.style === 2
      ? el("textarea", { name: f.custom_id, rows: 3, placeholder: f.placeholder })
      : el("input", { name: f.custom_id, placeholder: f.placeholder });
    input.value = f.value || "";
    if (f.required) input.required = true;
    form.append(el("label", {}, f.label), input);
  }
  form.append(el("div", { class: "buttons" },
    el("button", { type: "button", onclick: () => { $("#modal-backdrop").hidden = true; } }, "Cancel"),
    el("button", { type: "submit", id: "modal-submit" }, "Submit")));
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const values = {};
    for (const input of form.querySelectorAll("[name]")) values[input.name] = input.value;
    $("#modal-backdrop").hidden = true;
    await interact({ channel_id: S.channel, user_id: S.user, modal: { custom_id: modal.custom_id, values } });
  };
  $("#modal-backdrop").hidden = false;
  const first = form.querySelector("[name]");
  if (first) first.focus();
}

// --- wiring ------------------------------------------------------------------------------

function pictureFrom(items) {
  for (const item of items || []) {
    const file = item.getAsFile ? item.getAsFile() : item;
    if (file) return file;
  }
  return null;
}

window.addEventListener("DOMContentLoaded", async () => {
  $("#send-form").addEventListener("submit", send);
  $("#command-form").addEventListener("submit", runCommand);
  $("#text").addEventListener("input", onType);
  $("#text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#send-form").requestSubmit(); }
  });
  $("#file").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); ev.target.value = ""; });
  $("#cancel-reply").addEventListener("click", () => { S.replyTo = null; $("#replying").hidden = true; });
  document.addEventListener("click", (ev) => { if (!ev.target.closest(".menu, .apps")) $("#menu").hidden = true; });
  document.addEventListener("paste", (ev) => {
    const file = pictureFrom([...ev.clipboardData.items].filter((i) => i.kind === "file"));
    if (file) { ev.preventDefault(); upload(file); }
  });
  const main = document.querySelector("main");
  main.addEventListener("dragover", (ev) => { ev.preventDefault(); main.classList.add("drop-hint"); });
  main.addEventListener("dragleave", () => main.classList.remove("drop-hint"));
  main.addEventListener("drop", (ev) => {
    ev.preventDefault(); main.classList.remove("drop-hint");
    const file = pictureFrom(ev.dataTransfer.files);
    if (file) upload(file);
  });
  await loadState();
  setInterval(loadState, 2000);
  setInterval(pollMessages, 600);
  pollMessages();
});
