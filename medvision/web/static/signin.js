// Sign in without leaving the page on a wrong password (the API answers 401 as JSON);
// without JavaScript the plain form post still works.
(function () {
  "use strict";
  const form = document.getElementById("signin");
  const error = document.getElementById("signin-error");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const body = new URLSearchParams(new FormData(form));
    const r = await fetch("/login", { method: "POST", body, credentials: "same-origin", redirect: "follow" });
    if (r.ok || r.redirected) {
      window.location.assign(form.elements.next.value || "/");
    } else {
      error.hidden = false;
    }
  });
})();
