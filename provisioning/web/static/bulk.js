// Bulk actions on the device table: "tick all" and a count of the ticked rows. Without this
// script the checkboxes still post, and the confirmation page says how many.
(function () {
  "use strict";
  const form = document.getElementById("bulk");
  const all = document.getElementById("pick-all");
  const count = document.getElementById("bulk-count");
  if (!form) return;
  function boxes() {
    return Array.from(document.querySelectorAll('input[name="device"][form="bulk"]'));
  }
  function update() {
    const ticked = boxes().filter((b) => b.checked).length;
    if (count) count.textContent = ticked ? ticked + " ticked" : "";
  }
  if (all) {
    all.addEventListener("change", () => {
      for (const box of boxes()) box.checked = all.checked;
      update();
    });
  }
  document.addEventListener("change", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.name === "device") update();
  });
  document.addEventListener("rows-replaced", update);
})();
