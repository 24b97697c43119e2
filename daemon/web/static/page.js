"use strict";
// Keeps the page current without a reload: every few seconds it asks /api/page for the
// sections (HTML rendered and escaped by the server) and swaps only those that changed.
(() => {
  const every = Number(document.body.dataset.poll || "2") * 1000;
  const live = document.getElementById("live");

  // A picture that is gone (an original deleted, a preview replaced) is hidden, not broken.
  document.addEventListener("error", (event) => {
    if (event.target instanceof HTMLImageElement) event.target.classList.add("missing");
  }, true);

  async function poll() {
    try {
      const response = await fetch("/api/page", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const page = await response.json();
      for (const element of document.querySelectorAll("[data-section]")) {
        const section = page.sections[element.dataset.section];
        if (section && section.hash !== element.dataset.hash) {
          const open = [...element.querySelectorAll("details[open]")].map((d) => d.closest("[data-job]")?.dataset.job);
          element.innerHTML = section.html;
          element.dataset.hash = section.hash;
          for (const job of open) {
            element.querySelector(`[data-job="${CSS.escape(job || "")}"] details`)?.setAttribute("open", "");
          }
        }
      }
      live.textContent = `updated ${page.at}`;
      live.classList.remove("lost");
    } catch (error) {
      live.textContent = `cannot reach stylefold web (${error.message}); retrying`;
      live.classList.add("lost");
    }
    setTimeout(poll, every);
  }
  setTimeout(poll, every);
})();
