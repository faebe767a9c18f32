// Polls a running job's feed and appends its new transcript entries (escaped by the server).
"use strict";
(function () {
  const box = document.getElementById("transcript");
  if (!box || box.dataset.live !== "1") return;
  const job = box.dataset.job;
  let next = Number(box.dataset.next) || 0;
  async function poll() {
    try {
      const answer = await fetch(`/jobs/${job}/feed?after=${next}`,
                                 {credentials: "same-origin", cache: "no-store"});
      if (answer.ok) {
        const data = await answer.json();
        if (data.html) {
          const empty = document.getElementById("no-entries");
          if (empty) empty.remove();
          box.insertAdjacentHTML("beforeend", data.html);
        }
        next = data.next;
        document.getElementById("status").innerHTML = data.status;
        if (!data.live) { window.location.reload(); return; }
      }
    } catch (err) { /* the next poll tries again */ }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
