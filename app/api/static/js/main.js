// Shell: the nav, which view the URL names, and who is signed in.
import { ApiError, signOut, signedIn, whoami } from "./api.js";

const VIEWS = {
  search: "./search.js",
  topics: "./topics.js",
  groups: "./groups.js",
  status: "./status.js",
};

function currentView(params) {
  const v = params.get("view");
  return v && v in VIEWS ? v : "search";
}

// Each view calls nav(params) when its state changes: a new history entry, then a render.
export function nav(params, { replace = false } = {}) {
  const qs = new URLSearchParams(params).toString();
  const url = `/${qs ? `?${qs}` : ""}`;
  if (url !== location.pathname + location.search) {
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
  }
  render();
}

let rendering = 0;

async function render() {
  const params = new URLSearchParams(location.search);
  const view = currentView(params);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === view);
  }
  const root = document.getElementById("view");
  const mine = ++rendering;
  let mod;
  try {
    mod = await import(VIEWS[view]);
  } catch (err) {
    root.innerHTML = `<p id="error" class="error"></p>`;
    root.firstChild.textContent = `The ${view} view cannot be loaded: ${err.message}`;
    return;
  }
  if (mine !== rendering) return;
  // A view leaves timers behind (live tail); it stops them when its root is replaced.
  const fresh = document.createElement("div");
  fresh.className = `view view-${view}`;
  root.replaceChildren(fresh);
  mod.render(fresh, params, (p) => nav(p));
}

async function showWho() {
  const el = document.getElementById("whoami");
  try {
    const me = await whoami();
    window.chronik = { ...(window.chronik || {}), whoami: me };
    el.textContent = me.user ? `signed in as ${me.user}` : me.principal;
    el.title = `${me.principal} (HTTP auth ${me.auth})`;
    if (me.auth === "required" && signedIn()) {
      const out = document.createElement("button");
      out.type = "button";
      out.id = "signout";
      out.textContent = "Sign out";
      out.addEventListener("click", () => {
        signOut();
        location.reload();
      });
      el.append(" ", out);
    }
  } catch (err) {
    el.textContent = err instanceof ApiError && err.status === 401 ? "not signed in" : "";
  }
}

document.addEventListener("click", (ev) => {
  // Links within the console change the view without a page load.
  const a = ev.target.closest("a[href^='/?'], a[href='/']");
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  nav(new URL(a.href).searchParams);
});
window.addEventListener("popstate", () => render());
window.addEventListener("chronik:signed-in", () => {
  showWho();
  render();
});

showWho();
render();
