// DOM helpers the tabs share: `h` builds an element, `dataTable` a table whose
// columns sort on click, plus the small pieces every dashboard uses (a note,
// a chart's box, a section, a select).
//
//   h("p", { class: "qa-note", onclick: () => go() }, "text", child)
//   dataTable([{ key: "layer", label: "layer" }, { key: "db", label: "SQNR", numeric: true,
//     format: formatDb }], rows)

import { isNumber } from "./format.js";

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key === "class") {
      element.className = value;
    } else if (key.startsWith("on")) {
      element.addEventListener(key.slice(2), value);
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) {
      continue;
    }
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function note(text, kind = "info") {
  return h("p", { class: `qa-note qa-note-${kind}` }, text);
}

export function chartBox(extraClass = "") {
  return h("div", { class: `qa-chart ${extraClass}`.trim() });
}

// A table whose columns sort on click. columns: [{ key, label, format, numeric }].
export function dataTable(columns, rows, options = {}) {
  let sortKey = options.sortKey || null;
  let descending = false;
  const body = h("tbody");
  const headers = columns.map((column) =>
    h("th", {
      scope: "col",
      class: column.numeric ? "qa-num" : "",
      title: "Sort",
      onclick: () => {
        descending = sortKey === column.key ? !descending : false;
        sortKey = column.key;
        fill();
      },
    }, column.label),
  );
  function fill() {
    const sorted = rows.slice();
    if (sortKey) {
      const column = columns.find((c) => c.key === sortKey);
      sorted.sort((a, b) => compare(a[sortKey], b[sortKey], column.numeric) * (descending ? -1 : 1));
    }
    body.replaceChildren(
      ...sorted.map((row) =>
        h("tr", { class: options.rowClass ? options.rowClass(row) : "" }, columns.map((column) =>
          h("td", { class: column.numeric ? "qa-num" : "" },
            column.format ? column.format(row[column.key], row) : String(row[column.key] ?? "")),
        )),
      ),
    );
    headers.forEach((th, i) => {
      th.dataset.sorted = columns[i].key === sortKey ? (descending ? "desc" : "asc") : "";
    });
  }
  fill();
  return h("div", { class: "qa-table-wrap" },
    h("table", { class: "qa-table" }, h("thead", {}, h("tr", {}, headers)), body));
}

function compare(a, b, numeric) {
  if (numeric) {
    const x = isNumber(a) ? a : Infinity;
    const y = isNumber(b) ? b : Infinity;
    return x - y;
  }
  return String(a ?? "").localeCompare(String(b ?? ""));
}

export function select(options, onChange, label) {
  const element = h("select", { "aria-label": label, onchange: () => onChange(element.value) },
    options.map((o) => h("option", { value: o.value }, o.label)));
  return element;
}

// A titled section of a dashboard page.
export function section(title, ...children) {
  return h("section", { class: "qa-compare-section" }, h("h2", {}, title), ...children);
}
