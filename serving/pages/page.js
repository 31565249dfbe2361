// The model page's form: post the body to /invocations and show the answer (without this script the
// form posts to the page itself, which shows the same answer).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("try-form");
  const body = document.getElementById("body");
  const answer = document.getElementById("answer");
  const error = document.getElementById("error");
  const button = document.getElementById("predict");
  const show = (el, text) => { el.textContent = text; el.hidden = false; };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    answer.hidden = true;
    error.hidden = true;
    form.dataset.state = "scoring";
    try {
      const resp = await fetch("invocations", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: body.value,
      });
      const text = await resp.text();
      let doc = null;
      try { doc = JSON.parse(text); } catch (e) { doc = null; }
      if (resp.ok && doc !== null) {
        show(answer, JSON.stringify(doc, null, 2));
      } else if (doc !== null && doc.error_code) {
        show(error, `${doc.error_code}: ${doc.message}`);
      } else {
        show(error, `HTTP ${resp.status}: ${text}`);
      }
    } catch (e) {
      show(error, `the server did not answer: ${e}`);
    } finally {
      button.disabled = false;
      form.dataset.state = "done";
    }
  });
});
