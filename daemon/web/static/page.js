"use strict";
// Keeps the page current without a reload: every few seconds it asks /api/page for the
// sections (HTML rendered and escaped by the server) and swaps only those that changed.
(() => {
  const every = Number(document.body.dataset.poll || "2") * 1000;
  const live = document.getElementById("live");

  // A picture that did not come is hidden, not broken, and asked for again a few times, later
  // each time: the server refuses pictures while many wait to be made (503), and a file may
  // be back in a moment (a sync tool replacing it). One that is gone stays hidden.
  const TRIES = 5;
  document.addEventListener("error", (event) => {
    const image = event.target;
    if (!(image instanceof HTMLImageElement)) return;
    image.classList.add("missing");
    const tries = Number(image.dataset.tries || "0");
    if (tries >= TRIES) return;
    image.dataset.tries = String(tries + 1);
    setTimeout(() => {
      const url = new URL(image.src);
      url.searchParams.set("try", String(tries + 1));
      image.src = url.toString();
    }, 1000 * 2 ** tries * (1 + Math.random()));
  }, true);
  document.addEventListener("load", (event) => {
    if (event.target instanceof HTMLImageElement) event.target.classList.remove("missing");
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
