"use strict";
document.getElementById("signin").addEventListener("submit", async event => {
  event.preventDefault();
  try {
    await Sovereign.api("/ui/session", { method: "POST", body: { token: document.getElementById("token").value } });
    const next = new URL(new URLSearchParams(location.search).get("next") || "/", location.origin);
    location.href = next.origin === location.origin ? next.pathname + next.search : "/";  // never off this site
  } catch (error) { Sovereign.showError(error); }
});
