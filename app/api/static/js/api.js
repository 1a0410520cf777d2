// The console's only way to the server: the public HTTP API, with the caller's credentials.
const KEY = "chronik.auth";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

function authHeader() {
  const saved = sessionStorage.getItem(KEY);
  return saved ? { Authorization: saved } : {};
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export function signedIn() {
  return sessionStorage.getItem(KEY) !== null;
}

function query(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) qs.append(k, String(one));
  }
  const s = qs.toString();
  return s ? `?${s}` : "";
}

function detail(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    // FastAPI's validation errors: "where: what" for each.
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return `HTTP ${status}`;
}

let signInShown = null;

export async function api(path, params, init = {}) {
  const res = await fetch(path + query(params), {
    // Without credentials the browser never opens its own Basic prompt on a 401 (Fetch
    // standard); the sign-in form below asks instead, and the header carries what it got.
    credentials: "omit",
    ...init,
    headers: { Accept: "application/json", ...authHeader(), ...(init.headers || {}) },
  });
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (res.ok) return body;
  const message = detail(body, res.status);
  if (res.status === 401) {
    showSignIn(message);
  }
  if (res.status === 403) {
    throw new ApiError(403, `Not allowed: ${message}`);
  }
  throw new ApiError(res.status, message);
}

let who = null;

// Asked once per sign-in: the header and every kcat command use it.
export function whoami() {
  if (!who) {
    who = api("/whoami").catch((err) => {
      who = null;
      throw err;
    });
  }
  return who;
}

// A modal form; on submit the credentials go to sessionStorage and the page re-renders.
export function showSignIn(message) {
  if (signInShown) return;
  const dialog = document.createElement("div");
  dialog.id = "signin";
  dialog.className = "overlay";
  dialog.innerHTML = `
    <form id="signin-form" class="card">
      <h2>Sign in</h2>
      <p class="muted" id="signin-message"></p>
      <label>User <input id="signin-user" autocomplete="username"></label>
      <label>Password <input id="signin-password" type="password" autocomplete="current-password"></label>
      <p class="muted">or</p>
      <label>API token <input id="signin-token" autocomplete="off" placeholder="chr_…"></label>
      <button type="submit">Sign in</button>
    </form>`;
  dialog.querySelector("#signin-message").textContent = message || "";
  document.body.appendChild(dialog);
  signInShown = dialog;
  dialog.querySelector("#signin-user").focus();
  dialog.querySelector("form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = dialog.querySelector("#signin-user").value;
    const password = dialog.querySelector("#signin-password").value;
    const token = dialog.querySelector("#signin-token").value.trim();
    let value;
    if (token) value = `Bearer ${token}`;
    else {
      // btoa takes Latin-1 only: encode the UTF-8 bytes first.
      const bytes = new TextEncoder().encode(`${user}:${password}`);
      value = `Basic ${btoa(String.fromCharCode(...bytes))}`;
    }
    sessionStorage.setItem(KEY, value);
    who = null;
    dialog.remove();
    signInShown = null;
    window.dispatchEvent(new Event("chronik:signed-in"));
  });
}
