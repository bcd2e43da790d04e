"use strict";
document.getElementById("signin").addEventListener("submit", async event => {
  event.preventDefault();
  try {
    await Sovereign.api("/ui/session", { method: "POST", body: { token: document.getElementById("token").value } });
    const next = new URLSearchParams(location.search).get("next");
    location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
  } catch (error) { Sovereign.showError(error); }
});
