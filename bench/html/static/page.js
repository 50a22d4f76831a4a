// wsol-bench pages: filters, sorting and paging over items already in the page (no request, no library).
"use strict";

const IOU_THRESHOLD = 0.5;

// Shows the matching items `perPage` at a time; `items()` gives the matching elements in display order.
function pager(section, perPage, items, label) {
  let page = 0;
  const prev = section.querySelector(".pager .prev"), next = section.querySelector(".pager .next");
  const text = section.querySelector(".pager .page-label"), count = section.querySelector(".count");
  function show() {
    const matching = items();
    const pages = Math.max(1, Math.ceil(matching.length / perPage));
    page = Math.min(page, pages - 1);
    const visible = new Set(matching.slice(page * perPage, (page + 1) * perPage));
    for (const element of section.querySelectorAll(label.selector)) element.hidden = !visible.has(element);
    for (const element of matching) element.parentNode.appendChild(element);  // display order
    count.textContent = `${matching.length} of ${label.total()} ${label.noun}`;
    text.textContent = `page ${page + 1} of ${pages}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  prev.addEventListener("click", () => { page -= 1; show(); });
  next.addEventListener("click", () => { page += 1; show(); });
  return { show, reset() { page = 0; show(); } };
}

function setupRunGrid(section) {
  const grid = section.querySelector("#grid");
  const cards = Array.from(grid.querySelectorAll(".card"));
  const control = (id) => section.querySelector("#" + id);
  const viewOf = () => control("view").value;
  const iouOf = (card) => parseFloat(viewOf() === "gt" ? card.dataset.gtIou : card.dataset.iou);
  function matches(card) {
    const iou = iouOf(card);
    if (control("wrong-class").checked && card.dataset.correct !== "0") return false;
    if (control("wrong-box").checked && iou >= IOU_THRESHOLD) return false;
    if (iou < parseFloat(control("iou-min").value || "0") || iou > parseFloat(control("iou-max").value || "1")) return false;
    const wanted = control("class-filter").value;
    return wanted === "" || card.dataset.label === wanted;
  }
  function ordered() {
    const matching = cards.filter(matches);
    const sort = control("sort").value;
    if (sort === "row") matching.sort((a, b) => a.dataset.row - b.dataset.row);
    else matching.sort((a, b) => (sort === "iou-asc" ? 1 : -1) * (iouOf(a) - iouOf(b)) || a.dataset.row - b.dataset.row);
    return matching;
  }
  function redraw() {
    for (const card of cards) {
      const cam = card.querySelector("img.cam");
      const src = viewOf() === "gt" ? cam.dataset.gt : cam.dataset.top1;
      if (cam.getAttribute("src") !== src) cam.setAttribute("src", src);
      const iou = iouOf(card);
      const label = card.querySelector(".iou");
      label.textContent = `IoU ${iou.toFixed(2)} · box ${iou >= IOU_THRESHOLD ? "correct" : "wrong"}`;
      label.className = "iou " + (iou >= IOU_THRESHOLD ? "ok" : "bad");
    }
  }
  const pages = pager(section, 60, ordered, { selector: ".card", noun: "images", total: () => cards.length });
  for (const element of section.querySelectorAll("form.controls input, form.controls select")) {
    element.addEventListener("input", () => { redraw(); pages.reset(); });
  }
  redraw();
  pages.reset();
}

function setupStudyBrowser(section) {
  const tables = Array.from(section.querySelectorAll("table.browser"));
  const group = section.querySelector("#group"), agreement = section.querySelector("#agreement");
  const current = () => tables[group ? Number(group.value) : 0];
  function matches(row) {
    const loc = JSON.parse(row.dataset.loc), values = Object.values(loc);
    const option = agreement.options[agreement.selectedIndex];
    switch (option.value) {
      case "disagree": return values.some(Boolean) && !values.every(Boolean);
      case "every": return values.every(Boolean);
      case "none": return !values.some(Boolean);
      case "pair": return loc[option.dataset.yes] === 1 && loc[option.dataset.no] === 0;
      default: return true;
    }
  }
  const rows = () => Array.from(current().tBodies[0].rows);
  const pages = pager(section, 40, () => rows().filter(matches),
                      { selector: "tbody tr", noun: "images", total: () => rows().length });
  function change() {
    for (const table of tables) table.hidden = table !== current();
    pages.reset();
  }
  if (group) group.addEventListener("input", change);
  agreement.addEventListener("input", change);
  change();
}

document.addEventListener("DOMContentLoaded", () => {
  const grid = document.querySelector("#images");
  if (grid && grid.querySelector("#grid")) setupRunGrid(grid);
  const browser = document.querySelector("#browser");
  if (browser && browser.querySelector("table.browser")) setupStudyBrowser(browser);
});
