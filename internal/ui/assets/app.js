// diskless web console: renders the API's JSON (through /ui/api, which
// serves it as the logged-in token) and follows the boot event stream.
// Plain JavaScript, no framework, no build step; every value reaches the
// page through textContent, never as HTML.
"use strict";

const API = "/ui/api/v1";
const view = document.getElementById("view");
const statusBox = document.getElementById("status");

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)diskless_csrf=([^;]+)/);
  return m ? m[1] : "";
}
document.getElementById("logout-csrf").value = csrf();

// el builds an element: el("td", {class: "num"}, "text", child, ...).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, opts);
  if (r.status === 401) {
    location.href = "/ui/login";
    throw new Error("not logged in");
  }
  const data = r.headers.get("Content-Type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((data && data.error) || r.status + " " + r.statusText);
  return data;
}

function say(msg, isError) {
  statusBox.replaceChildren(el("p", { class: isError ? "error" : "" }, msg));
  if (!isError) setTimeout(() => { if (statusBox.textContent === msg) statusBox.replaceChildren(); }, 8000);
}

function notesText(res) {
  const n = (res && (res.notes || (res.host && res.notes))) || [];
  return n.length ? n.join("; ") : "done";
}

const units = ["B", "KiB", "MiB", "GiB", "TiB"];
function bytes(n) {
  let i = 0;
  n = Number(n) || 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}
function ago(t) {
  if (!t) return "";
  const s = Math.max(0, Math.round((Date.now() - new Date(t)) / 1000));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}
function when(t) { return t ? new Date(t).toLocaleString() : ""; }

// stateText: "booting: san-login", "online 5 min", "failed at script".
function stateText(st, online) {
  if (!st || !st.state) return online ? "online" : "offline";
  switch (st.state) {
    case "booting": return "booting: " + st.stage;
    case "online": return st.since ? "online " + ago(st.since) : "online";
    case "failed": return "failed at " + st.stage;
    case "stuck": return "stuck at " + st.stage;
  }
  return st.state;
}
function stateCell(st, online) {
  const s = (st && st.state) || (online ? "online" : "offline");
  return el("span", { class: "state state-" + s, "data-state": s, title: (st && st.failure) || "" }, stateText(st, online));
}

// confirmDialog asks before a change, saying what it does; fields are
// extra inputs whose values it returns (null when cancelled).
const dlg = document.getElementById("confirm");
function confirmDialog(title, text, okLabel, fields, danger) {
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const box = document.getElementById("confirm-fields");
  box.replaceChildren(...(fields || []));
  const ok = document.getElementById("confirm-ok");
  ok.textContent = okLabel;
  ok.className = danger ? "danger" : "";
  dlg.returnValue = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      if (dlg.returnValue !== "ok") return resolve(null);
      const vals = {};
      for (const i of box.querySelectorAll("input, select")) vals[i.name] = i.value;
      resolve(vals);
    }, { once: true });
    dlg.showModal();
  });
}

async function act(what, fn) {
  try {
    const res = await fn();
    say(what + ": " + notesText(res));
  } catch (e) {
    say(what + " failed: " + e.message, true);
  }
  render();
}

// ---- views ----

let current = { name: "", arg: "" };
let ioPrev = {}; // host -> {t, read, written} for I/O rates

async function hostsView() {
  const hosts = await api("GET", "/hosts");
  const now = Date.now();
  const rows = hosts.map((h) => {
    let rd = 0, wr = 0;
    for (const s of h.sessions) { rd += s.read_bytes; wr += s.written_bytes; }
    let rate = "";
    const p = ioPrev[h.name];
    if (p && now > p.t && rd >= p.read && wr >= p.written) {
      const dt = (now - p.t) / 1000;
      rate = bytes((rd - p.read) / dt) + "/s read, " + bytes((wr - p.written) / dt) + "/s written";
    }
    ioPrev[h.name] = { t: now, read: rd, written: wr };
    const b = h.last_boot;
    const lb = !b ? "" : when(b.started) + (b.result === "completed" ? ", " + b.duration_seconds.toFixed(1) + " s" : ", " + b.result);
    return el("tr", { "data-host": h.name },
      el("td", {}, el("a", { href: "#/hosts/" + encodeURIComponent(h.name) }, h.name)),
      el("td", { class: "state-cell" }, stateCell(h.state, h.online)),
      el("td", {}, h.ip || ""),
      el("td", { class: "wide" }, h.macs.join(", ")),
      el("td", {}, h.disk.base || h.disk.file || h.image || ""),
      el("td", { class: "wide" }, h.disk_mode),
      el("td", { class: "wide num" }, h.online ? rate || "…" : ""),
      el("td", { class: "wide" }, lb));
  });
  return [
    el("h1", {}, "Hosts"),
    hosts.length ? el("div", { class: "table-wrap" }, el("table", { id: "hosts" },
      el("thead", {}, el("tr", {}, ["Name", "State", "IP", "MAC", "Disk on", "Mode", "I/O", "Last boot"].map((c, i) =>
        el("th", { scope: "col", class: (i >= 3 && i !== 4 ? "wide" : "") + (c === "I/O" ? " num" : "") }, c)))),
      el("tbody", {}, rows)))
      : el("p", { class: "muted" }, "No hosts yet: add one with diskless host add, or adopt an unknown machine."),
  ];
}

async function hostView(name) {
  const [h, boots] = await Promise.all([
    api("GET", "/hosts/" + encodeURIComponent(name)),
    api("GET", "/hosts/" + encodeURIComponent(name) + "/boots"),
  ]);
  const running = h.online || (h.state && h.state.state === "booting");
  const path = "/hosts/" + encodeURIComponent(name);
  const facts = [
    ["State", stateCell(h.state, h.online)],
    ["Failure", h.state && h.state.failure],
    ["IP", h.ip], ["MAC", h.macs.join(", ")], ["Arch", h.arch],
    ["Image", h.image ? h.image + (h.version ? " v" + h.version + " (pinned)" : " (newest)") : ""],
    ["Disk", h.disk.mode + " on " + (h.disk.base || h.disk.file || "-") + ", " + bytes(h.disk.usage_bytes) + " used"],
    ["Disk error", h.disk_error], ["Boot", h.boot], ["Initiator", h.initiator_iqn], ["Target", h.target_iqn],
    ["Pending", h.pending],
  ].filter(([, v]) => v);
  const runningNote = running
    ? name + " is running now. "
    : name + " is not running. ";

  const snapshotBtn = el("button", {
    onclick: async () => {
      const input = el("input", { name: "name", id: "snap-name", placeholder: "snap-<time>", pattern: "[a-zA-Z0-9._-]*" });
      const v = await confirmDialog("Snapshot " + name,
        runningNote + (running
          ? "The snapshot holds what its disk holds now; what the running system has not written out yet is not in it. The machine goes on undisturbed."
          : "The snapshot holds its disk as it is; rolling back to it later undoes every write after it."),
        "Take snapshot", [el("label", { for: "snap-name" }, "Name (optional)"), input]);
      if (v) act("snapshot", async () => {
        const snap = await api("POST", path + "/snapshots", { name: v.name || undefined });
        return { notes: ["snapshot " + snap.name + " taken"] };
      });
    }, disabled: h.disk.mode !== "persistent",
  }, "Snapshot");
  const resetBtn = el("button", {
    class: "danger",
    onclick: async () => {
      const v = await confirmDialog("Reset " + name,
        runningNote + (running
          ? "Its disk is reset when it next boots: until then the running system goes on with its writes, and that boot discards them (take a snapshot first to keep them)."
          : "Its disk goes back to " + (h.disk.base || "its image") + " now: every write it made is discarded (take a snapshot first to keep them)."),
        "Reset disk", [], true);
      if (v) act("reset", () => api("POST", path + "/reset"));
    },
  }, "Reset disk");
  const promoteBtn = el("button", {
    class: "secondary",
    onclick: async () => {
      const v = await confirmDialog("Promote " + name,
        "Its disk becomes the next version of " + (h.image || "its image") + ". " + (running
          ? "It is running, so this is refused: shut it down first (its disk must not change while it is copied)."
          : "Hosts following the newest version move to it: offline ones now, running ones when they next boot."),
        "Promote", [], false);
      if (v) act("promote", () => api("POST", path + "/promote", {}));
    }, disabled: !h.image,
  }, "Promote to image");

  const images = await api("GET", "/images");
  const imgSel = el("select", { name: "image", id: "set-image" },
    images.map((i) => el("option", { value: i.name, selected: i.name === h.image }, i.name)));
  const modeSel = el("select", { name: "disk_mode", id: "set-mode" },
    ["persistent", "volatile"].map((m) => el("option", { value: m, selected: m === h.disk_mode }, m)));
  const changeBtn = el("button", {
    class: "secondary",
    onclick: async () => {
      const v = await confirmDialog("Change " + name,
        runningNote + (running
          ? "The new image or disk mode applies when it next boots; the running system is not disturbed."
          : "The new image or disk mode applies now."),
        "Change", [el("label", { for: "set-image" }, "Image"), imgSel, el("label", { for: "set-mode" }, "Disk mode"), modeSel]);
      if (v) act("change", () => api("PATCH", path, { image: v.image, disk_mode: v.disk_mode }));
    }, disabled: !images.length || h.disk.mode === "raw",
  }, "Change image or mode");

  const snaps = h.disk.snapshots.map((s) => el("tr", {},
    el("td", {}, s.name), el("td", {}, when(s.created)),
    el("td", {}, (s.base && s.base.image ? s.base.image + "@v" + s.base.version : "") + (s.auto ? " (automatic)" : "")),
    el("td", {},
      el("button", {
        class: "secondary", "data-snapshot": s.name,
        onclick: async () => {
          const v = await confirmDialog("Roll " + name + " back to " + s.name,
            runningNote + (running
              ? "A running host cannot be rolled back: shut it down first."
              : "Its disk goes back to the snapshot; every write after it is lost."), "Roll back", [], true);
          if (v) act("rollback", () => api("POST", path + "/snapshots/" + encodeURIComponent(s.name) + "/rollback"));
        },
      }, "Roll back"), " ",
      el("button", {
        class: "link",
        onclick: async () => {
          const v = await confirmDialog("Delete snapshot " + s.name, "The snapshot is deleted; the disk itself does not change.", "Delete", [], true);
          if (v) act("delete snapshot", () => api("DELETE", path + "/snapshots/" + encodeURIComponent(s.name)));
        },
      }, "delete"))));

  const boot = boots[0];
  const timeline = boot ? el("div", {},
    el("p", {}, "Started " + when(boot.started) + ", " + boot.result +
      (boot.result === "completed" ? " in " + boot.duration_seconds.toFixed(1) + " s" : "") +
      (boot.attempts > 1 ? ", " + boot.attempts + " attempts" : "") +
      (boot.failure ? ": " + boot.failure : "")),
    el("div", { class: "table-wrap" }, el("table", { id: "timeline" },
      el("thead", {}, el("tr", {}, ["+s", "Stage", "What", "Address", "Error"].map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, boot.events.map((e) => el("tr", { "data-stage": e.stage },
        el("td", { class: "num" }, ((new Date(e.time) - new Date(boot.started)) / 1000).toFixed(1)),
        el("td", {}, e.stage),
        el("td", {}, e.detail + (e.count > 1 ? " (×" + e.count + ")" : "")),
        el("td", {}, e.ip || ""),
        el("td", { class: "error" }, e.error || "")))))))
    : el("p", { class: "muted" }, "No boot seen yet.");

  return [
    el("h1", {}, "Host " + name),
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("div", { class: "actions" }, snapshotBtn, resetBtn, changeBtn, promoteBtn),
    el("h2", {}, "Last boot"), timeline,
    el("h2", {}, "Sessions"),
    h.sessions.length ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Initiator", "From", "Since", "Read", "Written"].map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, h.sessions.map((s) => el("tr", {}, el("td", {}, s.initiator), el("td", {}, s.remote),
        el("td", {}, when(s.since)), el("td", { class: "num" }, bytes(s.read_bytes)), el("td", { class: "num" }, bytes(s.written_bytes)))))))
      : el("p", { class: "muted" }, "None."),
    el("h2", {}, "Snapshots"),
    snaps.length ? el("div", { class: "table-wrap" }, el("table", { id: "snapshots" },
      el("thead", {}, el("tr", {}, ["Name", "Taken", "On", ""].map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, snaps)))
      : el("p", { class: "muted" }, h.disk.mode === "persistent" ? "None." : "Snapshots are of persistent disks."),
  ];
}

async function imagesView() {
  const [images, jobs] = await Promise.all([api("GET", "/images"), api("GET", "/jobs")]);
  const running = jobs.filter((j) => j.state === "running");
  return [
    el("h1", {}, "Images"),
    running.length ? el("div", {}, el("h2", {}, "Under way"), running.map((j) => el("p", {},
      j.kind + " " + j.object + ": ",
      el("progress", { max: j.total_bytes || 1, value: j.done_bytes, "aria-label": j.kind + " " + j.object }),
      " " + bytes(j.done_bytes) + " / " + bytes(j.total_bytes)))) : null,
    images.length ? images.map((i) => el("section", {},
      el("h2", {}, i.name + (i.description ? " – " + i.description : "")),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Version", "Size", "State", "Made", "Origin", "Hosts"].map((c) => el("th", { scope: "col" }, c)))),
        el("tbody", {}, i.versions.map((v) => el("tr", {},
          el("td", {}, "v" + v.version + (v.version === i.latest ? " (newest)" : "")),
          el("td", { class: "num" }, bytes(v.size)), el("td", {}, v.state), el("td", {}, when(v.created)),
          el("td", {}, v.origin), el("td", {}, (v.hosts || []).join(", ")))))))))
      : el("p", { class: "muted" }, "No images yet: diskless image build, import or create."),
  ];
}

async function unknownView() {
  const list = await api("GET", "/unknown-hosts");
  const images = await api("GET", "/images");
  return [
    el("h1", {}, "Unknown machines"),
    el("p", { class: "hint" }, "Machines that asked to boot but are no host. Adopting one makes it a host with a copy-on-write disk on an image; it boots it at its next boot."),
    list.length ? el("div", { class: "table-wrap" }, el("table", { id: "unknown" },
      el("thead", {}, el("tr", {}, ["MAC", "IP", "Arch", "First seen", "Last seen", "Requests", ""].map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, list.map((u) => el("tr", {},
        el("td", {}, u.mac), el("td", {}, u.ip || ""), el("td", {}, u.arch || ""), el("td", {}, when(u.first_seen)),
        el("td", {}, when(u.last_seen)), el("td", { class: "num" }, u.count),
        el("td", {}, el("button", {
          onclick: async () => {
            const name = el("input", { name: "name", id: "adopt-name", placeholder: "from the enroll pattern" });
            const img = el("select", { name: "image", id: "adopt-image" }, el("option", { value: "" }, "(the enroll section's)"),
              images.map((i) => el("option", { value: i.name }, i.name)));
            const v = await confirmDialog("Adopt " + u.mac,
              "It becomes a host with generated iSCSI names and CHAP secrets and a persistent copy-on-write disk on the image; it boots it the next time it starts.",
              "Adopt", [el("label", { for: "adopt-name" }, "Name"), name, el("label", { for: "adopt-image" }, "Image"), img]);
            if (v) act("adopt", () => api("POST", "/unknown-hosts/" + encodeURIComponent(u.mac) + "/adopt",
              { name: v.name || undefined, image: v.image || undefined }));
          },
        }, "Adopt")))))))
      : el("p", { class: "muted" }, "None."),
  ];
}

async function auditView() {
  const list = await api("GET", "/audit?limit=200");
  return [
    el("h1", {}, "Audit"),
    list.length ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Time", "Who", "Action", "Object", "Result"].map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, list.map((a) => el("tr", {},
        el("td", {}, when(a.time)), el("td", {}, a.who), el("td", {}, a.action), el("td", {}, a.object || ""),
        el("td", { class: a.status >= 400 ? "error" : "" }, a.status + (a.error ? " " + a.error : "")))))))
      : el("p", { class: "muted" }, "No changes recorded."),
  ];
}

// ---- routing and live updates ----

const views = { hosts: hostsView, images: imagesView, unknown: unknownView, audit: auditView };
let rendering = false, again = false;
let events = 0; // boot events seen: a view fetched before the latest is stale

async function render() {
  if (rendering) { again = true; return; }
  rendering = true;
  const m = location.hash.match(/^#\/([a-z]+)(?:\/(.+))?$/);
  const name = m ? m[1] : "hosts";
  const arg = m && m[2] ? decodeURIComponent(m[2]) : "";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const changed = name !== current.name || arg !== current.arg;
  current = { name, arg };
  try {
    const seen = events;
    const nodes = name === "hosts" && arg ? await hostView(arg) : await (views[name] || hostsView)();
    // Fetched before the latest event: it could show a host a step behind
    // what the event already showed. Fetch again instead.
    if (seen !== events) again = true;
    else if (!dlg.open) view.replaceChildren(...nodes.flat().filter(Boolean));
    if (changed) { document.title = "diskless: " + (arg || name); view.focus(); }
  } catch (e) {
    view.replaceChildren(el("p", { class: "error", role: "alert" }, e.message));
  }
  rendering = false;
  if (again) { again = false; render(); }
}

let pending = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; render(); }, 300);
}

// An event changes the row of its host at once; the view reloads shortly
// after to show the rest.
function onBootEvent(e) {
  const ev = JSON.parse(e.data);
  if (!ev.host) return;
  events++;
  const cell = document.querySelector('tr[data-host="' + CSS.escape(ev.host) + '"] .state-cell');
  // Failures wait for the reload: the state names the stage they hit.
  if (cell && ev.stage !== "failed" && ev.stage !== "stuck" && !ev.error) {
    const st = ev.stage === "root-login" || ev.stage === "session" ? { state: "online", since: ev.time }
      : { state: "booting", stage: ev.stage };
    cell.replaceChildren(stateCell(st, false));
  }
  if (current.name === "hosts" && (!current.arg || current.arg === ev.host)) refreshSoon();
}

const live = document.getElementById("live");
function connect() {
  const es = new EventSource(API + "/events");
  es.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); render(); });
  es.addEventListener("boot", onBootEvent);
  es.addEventListener("error", () => { live.textContent = "reconnecting"; live.classList.remove("on"); });
}

window.addEventListener("hashchange", render);
setInterval(() => { if (!document.hidden && !dlg.open) render(); }, 5000);
render();
connect();
