// specalign report: the sample browser. Every model and judge text is set with textContent, never
// parsed as HTML. Sample details live in JSON chunks embedded in the page and are parsed on first use.
(function () {
  "use strict";

  var D = JSON.parse(document.getElementById("sa-index").textContent);
  var PAGE = 50;
  var STATUS = ["scored", "unscored", "generation error", "pending"];
  var chunks = {};
  var haystacks = {};
  var DEFAULTS = { scenario: "", label: "", run: "", status: "", unsafe: false, spec: "", text: "", sort: "order", page: 0, sample: "" };
  var state = {};
  Object.keys(DEFAULTS).forEach(function (k) { state[k] = DEFAULTS[k]; });

  function el(tag, props) {
    var node = document.createElement(tag);
    var kids = Array.prototype.slice.call(arguments, 2);
    if (props) {
      Object.keys(props).forEach(function (k) {
        if (k === "text") node.textContent = props[k];
        else if (k === "cls") node.className = props[k];
        else node.setAttribute(k, props[k]);
      });
    }
    kids.forEach(function (kid) {
      if (kid === null || kid === undefined) return;
      node.appendChild(typeof kid === "string" ? document.createTextNode(kid) : kid);
    });
    return node;
  }

  function chunk(k) {
    if (!(k in chunks)) chunks[k] = JSON.parse(document.getElementById("sa-chunk-" + k).textContent);
    return chunks[k];
  }

  function detail(i) { return chunk(Math.floor(i / D.chunk))[i % D.chunk]; }

  function pct(permille) { return permille === null ? "—" : (permille / 10).toFixed(1); }

  function specOf(scenarioIndex, specIndex) { return D.scenarios[scenarioIndex].specs[specIndex]; }

  function haystack(i, r) {
    var key = i * D.runs.length + r;
    if (!(key in haystacks)) {
      var d = detail(i), x = d.r[r] || {};
      var parts = [D.samples[i][1], d.p, d.o || "", x.s || "", x.t || "", x.a || "", x.e || ""];
      (x.v || []).forEach(function (v) { parts.push(v[1]); });
      haystacks[key] = parts.join("\n").toLowerCase();
    }
    return haystacks[key];
  }

  function matching() {
    var out = [], needle = state.text.trim().toLowerCase(), spec = null;
    if (state.spec !== "") spec = state.spec.split(":").map(Number);
    for (var i = 0; i < D.samples.length; i++) {
      var s = D.samples[i];
      if (state.sample !== "" && i !== +state.sample) continue;
      if (state.scenario !== "" && s[0] !== +state.scenario) continue;
      if (state.label !== "" && s[2] !== state.label) continue;
      if (spec && s[0] !== spec[0]) continue;
      for (var r = 0; r < D.runs.length; r++) {
        if (state.run !== "" && r !== +state.run) continue;
        var c = D.cells[r][i];
        if (!c) continue;
        if (state.status !== "" && c[0] !== +state.status) continue;
        if (state.unsafe && c[2] !== 0) continue;
        if (spec && c[3].indexOf(spec[1]) < 0) continue;
        if (needle && haystack(i, r).indexOf(needle) < 0) continue;
        out.push([i, r]);
      }
    }
    if (state.sort !== "order") {
      var sign = state.sort === "sar-asc" ? 1 : -1;
      out.sort(function (a, b) {
        var x = D.cells[a[1]][a[0]][1], y = D.cells[b[1]][b[0]][1];
        if (x === null) return y === null ? 0 : 1;
        if (y === null) return -1;
        return sign * (x - y);
      });
    }
    return out;
  }

  function violatedText(scenarioIndex, violated) {
    return violated.map(function (k) { return specOf(scenarioIndex, k)[0]; }).join(" ");
  }

  function sampleName(i) { return D.scenarios[D.samples[i][0]].key + "/" + D.samples[i][1]; }

  function snippet(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

  function render() {
    var rows = matching();
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var body = document.getElementById("sa-rows");
    body.textContent = "";
    rows.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (pair) { body.appendChild(rowOf(pair[0], pair[1])); });
    document.getElementById("sa-count").textContent = rows.length.toLocaleString("en-US") + " of " + D.pairs.toLocaleString("en-US") + " answers" +
      (rows.length ? " · page " + (state.page + 1) + " of " + pages : "");
    var chip = document.getElementById("f-sample");
    chip.hidden = state.sample === "";
    if (state.sample !== "") document.getElementById("f-sample-id").textContent = sampleName(+state.sample);
    document.getElementById("sa-prev").disabled = state.page === 0;
    document.getElementById("sa-next").disabled = state.page >= pages - 1;
    document.getElementById("sa-empty").hidden = rows.length > 0;
  }

  function rowOf(i, r) {
    var s = D.samples[i], c = D.cells[r][i], run = D.runs[r];
    var tr = el("tr", { cls: "sample-row", tabindex: "0", "data-sample": String(i), "data-run": String(r) },
      el("td", { text: D.scenarios[s[0]].name }),
      el("td", { cls: "mono", text: s[1] }),
      el("td", null, el("span", { cls: "badge " + (s[2] || "none"), text: s[2] || "?" })),
      el("td", null, el("span", { cls: "swatch", style: "background:" + run.color }), run.label),
      el("td", { cls: "status-" + c[0], text: STATUS[c[0]] }),
      el("td", { cls: "num", text: pct(c[1]) }),
      el("td", { cls: "mono violated", text: violatedText(s[0], c[3]) }),
      el("td", { cls: "snippet", text: snippet(detail(i).p, 140) }));
    function toggle() {
      var next = tr.nextSibling;
      if (next && next.classList && next.classList.contains("detail-row")) { next.remove(); tr.classList.remove("open"); return; }
      var cell = el("td", { colspan: "8" }, detailOf(i, r, true));
      tr.after(el("tr", { cls: "detail-row" }, cell));
      tr.classList.add("open");
    }
    tr.addEventListener("click", toggle);
    tr.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
    return tr;
  }

  function block(title, text, cls) {
    return el("div", { cls: "block" }, el("h4", { text: title }), el("pre", { cls: cls || "text", text: text }));
  }

  function detailOf(i, r, withOthers) {
    var s = D.samples[i], d = detail(i), x = d.r[r] || {}, c = D.cells[r][i], run = D.runs[r];
    var box = el("div", { cls: "detail" });
    var meta = run.label + " · " + STATUS[c[0]] + (c[1] !== null ? " · SAR " + pct(c[1]) : "") +
      (x.k !== undefined ? " · " + x.k + " completion tokens · " + x.c + " calls" : "");
    box.appendChild(el("p", { cls: "meta", text: meta }));
    if (x.e) box.appendChild(el("p", { cls: "reason", text: "Reason: " + x.e }));
    if (x.f && x.f.length) box.appendChild(el("p", { cls: "flags", text: "Flags: " + x.f.join(", ") }));
    var disputed = disputes(i, r);
    if (disputed) box.appendChild(disputed);
    box.appendChild(block("Prompt sent", x.s || d.p));
    if (d.o) box.appendChild(block("Original prompt (before attack enhancement)", d.o));
    if (x.t) {
      box.appendChild(el("details", { cls: "thought" }, el("summary", { text: "Thought (" + x.t.length + " characters)" }),
        el("pre", { cls: "text", text: x.t })));
    }
    box.appendChild(block("Response", x.a || "", "text response"));
    if (x.v && x.v.length) box.appendChild(verdictTable(s[0], x.v));
    if (withOthers) {
      D.runs.forEach(function (other, k) {
        if (k === r || !D.cells[k][i]) return;
        var oc = D.cells[k][i];
        var more = el("details", { cls: "other-run" }, el("summary", null, el("span", { cls: "swatch", style: "background:" + other.color }),
          other.label + " · " + STATUS[oc[0]] + " · SAR " + pct(oc[1]) + (oc[3].length ? " · violated " + violatedText(s[0], oc[3]) : "")));
        more.addEventListener("toggle", function () { if (more.open && more.childNodes.length === 1) more.appendChild(detailOf(i, k, false)); });
        box.appendChild(more);
      });
    }
    return box;
  }

  // The judges' verdicts on the specs they dispute, when the sample is among the agreement's contested ones.
  function disputes(i, r) {
    var A = D.agreement, found = null;
    A.contested.forEach(function (c) { if (!found && c[0] === i && c[1].indexOf(r) >= 0) found = c; });
    if (!found) return null;
    var judges = [];
    found[2].forEach(function (spec) {
      spec[1].forEach(function (jv) { if (judges.indexOf(jv[0]) < 0) judges.push(jv[0]); });
    });
    judges.sort(function (a, b) { return a - b; });
    var head = el("tr", null, el("th", { text: "spec" }));
    judges.forEach(function (j) {
      var judge = A.judges[j] || ["?", "unknown judge", "unknown judge"];
      head.appendChild(el("th", { title: judge[2], text: judge[0] + " " + judge[1] }));
    });
    var body = el("tbody");
    found[2].forEach(function (spec) {
      var tr = el("tr", null, el("td", { cls: "mono", text: spec[0] }));
      judges.forEach(function (j) {
        var said = spec[1].filter(function (jv) { return jv[0] === j; })[0];
        tr.appendChild(el("td", null, said ? el("span", { cls: "verdict " + said[1], text: said[1] }) : "—"));
      });
      body.appendChild(tr);
    });
    var own = A.judges[A.run_judge[r]];
    return el("div", { cls: "disputed" }, el("h4", { text: "The judges disagree" }),
      el("table", { cls: "verdicts" }, el("thead", null, head), body),
      own ? el("p", { cls: "muted", text: "The verdicts further down are " + own[0] + "'s, this run's judge." }) : null);
  }

  function verdictTable(scenarioIndex, verdicts) {
    var table = el("table", { cls: "verdicts" }, el("thead", null, el("tr", null,
      el("th", { text: "spec" }), el("th", { text: "verdict" }), el("th", { text: "judge's reason" }), el("th", { text: "specification" }))));
    var body = el("tbody");
    verdicts.forEach(function (v, k) {
      var spec = specOf(scenarioIndex, k);
      body.appendChild(el("tr", { cls: "v-" + v[0] },
        el("td", { cls: "mono", text: spec[0] }), el("td", null, el("span", { cls: "verdict " + v[0], text: v[0] })),
        el("td", { text: v[1] }), el("td", { cls: "spec-cell", text: spec[2] || "(text unavailable)" })));
    });
    table.appendChild(body);
    return table;
  }

  function fillSpecs() {
    var select = document.getElementById("f-spec");
    var keep = state.spec;
    select.textContent = "";
    select.appendChild(el("option", { value: "", text: "any spec" }));
    D.scenarios.forEach(function (sc, si) {
      if (state.scenario !== "" && si !== +state.scenario) return;
      var group = el("optgroup", { label: sc.name });
      sc.specs.forEach(function (spec, k) {
        group.appendChild(el("option", { value: si + ":" + k, text: spec[0] + " violated — " + snippet(spec[2] || "", 70) }));
      });
      select.appendChild(group);
    });
    select.value = keep;
    if (select.value !== keep) state.spec = "";
  }

  function fillControls() {
    var scen = document.getElementById("f-scenario"), run = document.getElementById("f-run");
    D.scenarios.forEach(function (sc, si) { scen.appendChild(el("option", { value: String(si), text: sc.name })); });
    D.runs.forEach(function (r, k) { run.appendChild(el("option", { value: String(k), text: r.label })); });
    fillSpecs();
  }

  function syncControls() {
    ["scenario", "label", "run", "status", "sort", "text"].forEach(function (k) { document.getElementById("f-" + k).value = state[k]; });
    document.getElementById("f-unsafe").checked = state.unsafe;
    fillSpecs();
    document.getElementById("f-spec").value = state.spec;
  }

  // Show one sample alone (every filter reset), its answer from run r opened and in view.
  function openSample(i, r) {
    if (!(i >= 0 && i < D.samples.length)) return;
    clearTimeout(timer);
    Object.keys(DEFAULTS).forEach(function (k) { state[k] = DEFAULTS[k]; });
    state.sample = String(i);
    syncControls();
    render();
    var row = document.querySelector('tr.sample-row[data-sample="' + i + '"][data-run="' + r + '"]') ||
      document.querySelector("tr.sample-row");
    if (row && !row.classList.contains("open")) row.click();
    if (row) row.focus({ preventScroll: true });
    document.getElementById("samples").scrollIntoView();
  }

  // #sample-I-run-R opens that answer: links in the agreement section, and a report opened at such an address.
  var routed = "";
  function route() {
    var m = /^#sample-(\d+)(?:-run-(\d+))?$/.exec(location.hash);
    if (!m || location.hash === routed) return;
    routed = location.hash;
    openSample(+m[1], m[2] === undefined ? -1 : +m[2]);
  }

  function setControls() {
    document.getElementById("f-scenario").value = state.scenario;
    document.getElementById("f-run").value = state.run;
    fillSpecs();
    document.getElementById("f-spec").value = state.spec;
  }

  var timer = null;
  function bind(id, key, event, after) {
    var node = document.getElementById(id);
    node.addEventListener(event, function () {
      state[key] = node.type === "checkbox" ? node.checked : node.value;
      state.page = 0;
      if (after) after();
      if (key === "text") { clearTimeout(timer); timer = setTimeout(render, 200); } else render();
    });
  }

  function focusSpec(run, scenarioKey, specId) {
    var si = D.scenarios.findIndex(function (sc) { return sc.key === scenarioKey; });
    if (si < 0) return;
    var k = D.scenarios[si].specs.findIndex(function (spec) { return spec[0] === specId; });
    state.run = String(run); state.scenario = String(si); state.spec = si + ":" + k; state.page = 0;
    setControls();
    render();
    document.getElementById("samples").scrollIntoView();
  }

  function init() {
    fillControls();
    bind("f-scenario", "scenario", "change", fillSpecs);
    bind("f-label", "label", "change");
    bind("f-run", "run", "change");
    bind("f-status", "status", "change");
    bind("f-unsafe", "unsafe", "change");
    bind("f-spec", "spec", "change");
    bind("f-sort", "sort", "change");
    bind("f-text", "text", "input");
    document.getElementById("sa-prev").addEventListener("click", function () { state.page--; render(); });
    document.getElementById("sa-next").addEventListener("click", function () { state.page++; render(); });
    document.getElementById("f-sample-clear").addEventListener("click", function () { state.sample = ""; state.page = 0; render(); });
    var onlyViolated = document.getElementById("f-heat-violated");
    onlyViolated.addEventListener("change", function () {
      document.querySelector("table.heatmap").classList.toggle("only-violated", onlyViolated.checked);
    });
    document.querySelectorAll("a.contested-link").forEach(function (link) {
      link.addEventListener("click", function () {
        routed = link.getAttribute("href");
        openSample(+link.getAttribute("data-sample"), +link.getAttribute("data-run"));
      });
    });
    window.addEventListener("hashchange", route);
    document.querySelectorAll("td.heat[data-spec]").forEach(function (cell) {
      var go = function () { focusSpec(+cell.getAttribute("data-run"), cell.getAttribute("data-scenario"), cell.getAttribute("data-spec")); };
      cell.addEventListener("click", go);
      cell.addEventListener("keydown", function (e) { if (e.key === "Enter") go(); });
    });
    document.querySelectorAll("[data-run].point, [data-run].bar").forEach(function (mark) {
      mark.addEventListener("click", function () {
        state.run = mark.getAttribute("data-run"); state.page = 0; setControls(); render();
        document.getElementById("samples").scrollIntoView();
      });
    });
    render();
    route();
    document.body.setAttribute("data-ready", "1");
  }

  init();
})();
