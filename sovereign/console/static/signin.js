"use strict";
document.getElementById("signin").addEventListener("submit", async event => {
  event.preventDefault();
  try {
    await Sovereign.api("/ui/session", { method: "POST", body: { token: document.getElementById("token").value } });
    const next = new URL(new URLSearchParams(location.search).get("next") || "/", location.origin);
    // never off this site: a same-origin URL, followed whole (a path like "//host" would leave it)
    location.href = next.origin === location.origin && !next.pathname.startsWith("//") ? next.href : "/";
  } catch (error) { Sovereign.showError(error); }
});
