// Live refresh for tables marked data-live: fetch the server-rendered rows and swap the body.
// The page works without this script (reload shows the same data).
(function () {
  "use strict";
  const INTERVAL_MS = 10000;
  for (const table of document.querySelectorAll("table[data-live]")) {
    const url = table.getAttribute("data-live");
    const note = document.getElementById("live-note");
    async function refresh() {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const holder = document.createElement("table");
        holder.innerHTML = await response.text();
        const body = holder.querySelector("tbody");
        if (body) {
          // Keep what was ticked for a bulk action (the rows' checkboxes) across the swap.
          const ticked = new Set(
            Array.from(table.tBodies[0].querySelectorAll("input[type=checkbox]:checked")).map((b) => b.value)
          );
          for (const box of body.querySelectorAll("input[type=checkbox]")) box.checked = ticked.has(box.value);
          table.tBodies[0].replaceWith(body);
          document.dispatchEvent(new Event("rows-replaced"));
        }
        if (note) note.textContent = "Updated " + new Date().toLocaleTimeString() + " (every 10 s).";
      } catch (err) {
        if (note) note.textContent = "Live update failed (" + err.message + "); retrying.";
      }
    }
    setInterval(refresh, INTERVAL_MS);
  }
})();
