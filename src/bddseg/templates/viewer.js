/* bddseg view: browse every evaluated image. Reads window.BDDSEG_VIEW (data.js); no network.
 * Masks are class-id PNGs coloured by the SVG filter #classes (its tables are the palette;
 * a hidden class gets alpha 0); the error view is the prediction over the truth with
 * mix-blend-mode: difference, through the filter #errors (see the group in panel()). Each image is one element
 * [data-image=STEM] in #list, all of them in the DOM from the start (CSS content-visibility
 * keeps the off-screen ones from being laid out or painted).
 * body[data-current] names the selected image at once; body[data-shown] and the mark
 * performance.mark("bddseg-shown") follow when its views have all decoded and been drawn. */
(function () {
  "use strict";
  var D = window.BDDSEG_VIEW;
  var $ = function (id) { return document.getElementById(id); };
  if (!D) {
    $("list").textContent = "data.js did not load: rebuild with bddseg view";
    return;
  }
  var R = D.runs.length, NC = D.classes.length, OFF = D.official, RUNS = "ABCDEFGH";
  var IGNORE = 255;
  var state = { visible: [], current: -1, hidden: {}, cell: null, shown: 0 };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function pct(v) { return v == null ? "—" : (100 * v).toFixed(1); }
  var NUM = new Intl.NumberFormat();  // one formatter: toLocaleString makes one per call
  function esc(t) {
    return String(t).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }
  function delta(a, b) {  // b - a in points, as a span with its sign's colour
    if (a == null || b == null) return el("span", {}, "—");
    var d = 100 * (b - a);
    return el("span", { "class": Math.abs(d) < 0.05 ? "" : d > 0 ? "pos" : "neg" },
      (d >= 0 ? "+" : "") + d.toFixed(1));
  }
  function runName(r) { return RUNS.charAt(r) || String(r + 1); }
  function swatch(c) {
    var s = el("span", { "class": "sw" });
    s.style.background = "rgb(" + D.palette[c].join(",") + ")";
    return s;
  }
  function url(dir, im) { return dir + encodeURIComponent(im.s) + ".png"; }

  // ------------------------------------------------------------ colours (the SVG filter)
  var RED = [1, 32 / 255, 32 / 255, 1], GREY = [0.5, 0.5, 0.5, 110 / 255], CLEAR = [0, 0, 0, 0];
  function table(prefix, colour) {  // a filter's four 256-entry tables from colour(value)
    var ch = [[], [], [], []];
    for (var v = 0; v < 256; v++) {
      var c = colour(v);
      // + 1/4 of a level: Chromium truncates a table's output to 8 bits (13/255 gave 12)
      for (var k = 0; k < 4; k++) ch[k].push(Math.min(1, (Math.round(255 * c[k]) + 0.25) / 255).toFixed(6));
    }
    ["r", "g", "b", "a"].forEach(function (x, k) {
      $(prefix + "-" + x).setAttribute("tableValues", ch[k].join(" "));
    });
  }
  function setFilter() {
    table("lut", function (v) {
      if (v >= NC) return CLEAR;
      var c = D.palette[v];
      return [c[0] / 255, c[1] / 255, c[2] / 255, state.hidden[v] ? 0 : 1];
    });
  }
  // The error group: the truth; the prediction (255 -> 254) blended as |truth - prediction|,
  // at most 254 over a labelled pixel (ids 0..19) and 0 only where they agree; then the
  // unlabelled truth pixels set to 255. A missing prediction leaves the truth there.
  table("clamp", function (v) { var c = Math.min(v, 254) / 255; return [c, c, c, 1]; });
  table("unl", function (v) { return v === IGNORE ? [1, 1, 1, 1] : CLEAR; });
  table("err", function (d) { return d === 0 ? CLEAR : d === IGNORE ? GREY : RED; });
  table("miss", function (v) { return v === IGNORE ? GREY : RED; });

  // ------------------------------------------------------------ the list
  // The 1,000 cards: clones of one (cheaper than building each node, or parsing HTML).
  var model = el("div", { "class": "card" });
  model.appendChild(el("img", { loading: "lazy", decoding: "async", alt: "", width: 128, height: 72 }));
  model.appendChild(el("div", { "class": "info" }));
  ["stem", "score", "pixels"].forEach(function (c) { model.lastChild.appendChild(el("div", { "class": c })); });
  var pixelBoxes = [];
  var cards = D.images.map(function (im, i) {
    var card = model.cloneNode(true), info = card.lastChild, score = "";
    card.setAttribute("data-image", im.s);
    card.setAttribute("data-index", i);
    card.firstChild.src = im.t;
    info.firstChild.textContent = im.s;
    info.firstChild.title = im.s;
    for (var r = 0; r < R; r++) score += (R > 1 ? runName(r) + " " : "mIoU ") + pct(im.miou[r]) + "  ";
    info.children[1].textContent = score;
    if (R > 1) info.children[1].appendChild(delta(im.miou[0], im.miou[1]));
    pixelBoxes.push(info.lastChild);
    return card;
  });
  $("list").addEventListener("click", function (e) {
    var card = e.target.closest(".card");
    if (card) select(+card.getAttribute("data-index"));
  });

  function byKey(key, descending) {  // nulls last, then by stem
    return function (a, b) {
      var x = key(D.images[a]), y = key(D.images[b]);
      if (x == null || y == null) return (x == null) - (y == null) || a - b;
      return (descending ? y - x : x - y) || a - b;
    };
  }
  var SORTS = {
    worst: ["worst mIoU first (" + (R > 1 ? "run A" : "this run") + ")",
      byKey(function (im) { return im.miou[0]; }, false)],
    best: ["best mIoU first", byKey(function (im) { return im.miou[0]; }, true)],
    "class": ["a class's IoU, lowest first", null],
    name: ["file name", function (a, b) { return a - b; }]
  };
  if (R > 1) {
    SORTS.differ = ["where A and B differ most", byKey(function (im) {
      return im.miou[0] == null || im.miou[1] == null ? null : Math.abs(im.miou[1] - im.miou[0]);
    }, true)];
    SORTS.gain = ["where B beats A most", byKey(function (im) {
      return im.miou[0] == null || im.miou[1] == null ? null : im.miou[1] - im.miou[0];
    }, true)];
  }

  function order() {
    var cls = $("filter-class").value, idx, pixels = {};
    if (state.cell) {  // the images with the most a -> b pixels, most first
      var top = D.cells[state.cell.r][state.cell.a + "," + state.cell.b] || [];
      idx = top.map(function (t) { pixels[t[0]] = t[1]; return t[0]; });
    } else {
      var mode = $("sort").value, cmp = SORTS[mode][1];
      if (mode === "class") {
        var c = +$("sort-class").value;
        cmp = byKey(function (im) { return im.iou[0][c]; }, false);
      }
      idx = D.images.map(function (_, i) { return i; }).sort(cmp);
    }
    if (cls !== "") {
      idx = idx.filter(function (i) { return D.images[i].c.indexOf(+cls) >= 0; });
    }
    var group = $("filter-group").value;
    if (group !== "") {
      idx = idx.filter(function (i) { return D.images[i].g === +group; });
    }
    return { idx: idx, pixels: pixels };
  }

  function render(keep) {
    var o = order(), list = $("list"), frag = document.createDocumentFragment(), on = {};
    o.idx.forEach(function (i) { on[i] = true; });
    o.idx.forEach(function (i) {
      var card = cards[i];
      card.hidden = false;
      pixelBoxes[i].textContent = o.pixels[i] ? NUM.format(o.pixels[i]) + " px " + cellText() : "";
      frag.appendChild(card);
    });
    cards.forEach(function (card, i) { if (!on[i]) { card.hidden = true; frag.appendChild(card); } });
    list.appendChild(frag);
    state.visible = o.idx;
    $("count").textContent = o.idx.length + " of " + D.images.length + " images";
    $("sort-class-label").hidden = $("sort").value !== "class" || !!state.cell;
    var note = $("filter-note");
    note.textContent = "";
    if (state.cell) {
      note.textContent = "most " + cellText() + " pixels" + (R > 1 ? " (run " + runName(state.cell.r) + ")" : "");
      var clear = el("button", { type: "button", id: "clear-cell" }, "clear");
      clear.addEventListener("click", function () { state.cell = null; drawConfusion(); render(); });
      note.appendChild(clear);
    }
    if (keep && on[state.current]) return;
    if (o.idx.length) select(o.idx[0]);
  }
  function cellText() {
    return state.cell ? D.classes[state.cell.a] + " → " + D.classes[state.cell.b] : "";
  }

  // ------------------------------------------------------------ one image
  var views = [];  // {stack, imgs: [[img, what]], diff: the error group or null, run}
  function panel(caption, photo, layers, diffRun) {
    var fig = el("figure", { "class": "panel" }), stack = el("div", { "class": "stack" });
    var imgs = [], diff = null;
    function add(parent, cls, what) {
      var img = el("img", { "class": cls, alt: "" });
      parent.appendChild(img);
      imgs.push([img, what]);
    }
    if (photo) add(stack, "photo", "photo");
    layers.forEach(function (l) { add(stack, l[0], l[1]); });
    if (diffRun != null) {  // the prediction minus the truth, coloured by #errors
      diff = el("div", { "class": "diff" });
      add(diff, "ids", "truth");
      add(diff, "ids minus", "pred" + diffRun);
      add(diff, "ids unlabelled", "truth");
      stack.appendChild(diff);
    }
    fig.appendChild(stack);
    fig.appendChild(el("figcaption", {}, caption));
    $("panels").appendChild(fig);
    views.push({ stack: stack, imgs: imgs, diff: diff, run: diffRun });
  }
  function buildPanels() {
    if (D.photos) panel("photo", true, []);
    panel("truth", D.photos, [["mask", "truth"]]);
    for (var r = 0; r < R; r++) {
      panel("prediction" + (R > 1 ? " " + runName(r) + ": " + D.runs[r].name : ""), D.photos,
        [["mask", "pred" + r]]);
    }
    for (r = 0; r < R; r++) {
      panel("wrong pixels (red; grey: unlabelled)" + (R > 1 ? " " + runName(r) : ""), D.photos,
        D.photos ? [] : [["under", "truth"]], r);
    }
  }
  function source(im, what) {
    if (what === "photo") return im.p;
    if (what === "truth") return url("truth/", im);
    return im.m[+what.slice(4)] ? url("pred/" + what.slice(4) + "/", im) : null;
  }

  function select(i) {
    if (i == null || i < 0) return;
    var im = D.images[i], prev = cards[state.current];
    if (!im) return;
    if (prev) prev.classList.remove("active");
    state.current = i;
    document.body.setAttribute("data-current", im.s);  // at once; data-shown once decoded
    cards[i].classList.add("active");
    cards[i].scrollIntoView({ block: "nearest" });
    $("title").textContent = im.s + "  ·  " + im.w + "×" + im.h;
    var pending = [], ticket = ++state.shown;
    views.forEach(function (v) {
      v.stack.style.aspectRatio = im.w + " / " + im.h;
      v.stack.classList.toggle("has-photo", !!im.p);
      if (v.diff) v.diff.classList.toggle("missing", !im.m[v.run]);
      v.imgs.forEach(function (pair) {
        var src = source(im, pair[1]);
        pair[0].hidden = !src;
        if (src && pair[0].getAttribute("src") !== src) {
          pair[0].src = src;
          pending.push(pair[0].decode().catch(function () {}));
        }
      });
    });
    Promise.all(pending).then(function () {
      requestAnimationFrame(function () {
        if (ticket !== state.shown) return;
        document.body.setAttribute("data-shown", im.s);
        performance.mark("bddseg-shown");
        prefetch();
      });
    });
    drawImageMetrics(im);
    drawLegend(im);
    if (location.protocol !== "about:") history.replaceState(null, "", "#" + encodeURIComponent(im.s));
  }
  var ahead = [];  // the neighbours' files, decoded: kept here so that the cache keeps them
  function prefetch() {  // the next and previous images' views, so that → and ← show at once
    var pos = state.visible.indexOf(state.current), want = {};
    [pos + 1, pos - 1].forEach(function (p) {
      var im = D.images[state.visible[p]];
      if (!im) return;
      views.forEach(function (v) {
        v.imgs.forEach(function (pair) { var s = source(im, pair[1]); if (s) want[s] = true; });
      });
    });
    ahead = Object.keys(want).map(function (s) {
      var img = new Image();
      img.src = s;
      img.decode().catch(function () {});
      return img;
    });
  }
  function move(step) {
    var pos = state.visible.indexOf(state.current);
    var next = state.visible[Math.min(state.visible.length - 1, Math.max(0, pos + step))];
    if (next != null && next !== state.current) select(next);
  }

  function drawImageMetrics(im) {
    var t = $("image-metrics");
    t.textContent = "";
    var head = el("tr");
    head.appendChild(el("th", {}, ""));
    for (var r = 0; r < R; r++) head.appendChild(el("th", {}, R > 1 ? runName(r) : "this run"));
    if (R > 1) head.appendChild(el("th", {}, "B − A"));
    t.appendChild(head);
    function row(name, vals, cls, sw) {
      var tr = el("tr", cls ? { "class": cls } : {}), td = el("td");
      if (sw != null) td.appendChild(swatch(sw));
      td.appendChild(document.createTextNode(name));
      tr.appendChild(td);
      vals.forEach(function (v) { tr.appendChild(el("td", {}, pct(v))); });
      if (R > 1) { var d = el("td"); d.appendChild(delta(vals[0], vals[1])); tr.appendChild(d); }
      t.appendChild(tr);
    }
    row("mIoU (official, this image)", im.miou, "");
    row("pixel accuracy", im.acc, "");
    for (var c = 0; c < OFF; c++) {
      var vals = im.iou.map(function (a) { return a[c]; });
      if (vals.every(function (v) { return v == null; })) continue;
      var here = im.c.indexOf(c) >= 0;
      row(D.classes[c] + (here ? "" : " (not in truth)"), vals, here ? "" : "absent", c);
    }
  }

  var legendBoxes = [];
  function buildLegend() {
    var box = $("legend");
    for (var c = 0; c < NC; c++) {
      var label = el("label", { "data-class": c }), cb = el("input", { type: "checkbox" });
      cb.checked = true;
      cb.addEventListener("change", (function (c, cb) {
        return function () { state.hidden[c] = !cb.checked; setFilter(); };
      })(c, cb));
      label.appendChild(cb);
      label.appendChild(swatch(c));
      label.appendChild(document.createTextNode(D.classes[c]));
      box.appendChild(label);
      legendBoxes.push(cb);
    }
    function all(on) {
      legendBoxes.forEach(function (cb, c) { cb.checked = on; state.hidden[c] = !on; });
      setFilter();
    }
    $("all-classes").addEventListener("click", function () { all(true); });
    $("no-classes").addEventListener("click", function () { all(false); });
  }
  function drawLegend(im) {
    var labels = $("legend").children;
    for (var c = 0; c < labels.length; c++) labels[c].classList.toggle("here", im.c.indexOf(c) >= 0);
  }

  // ------------------------------------------------------------ the confusion matrix
  function drawConfusion() {
    var r = +($("confusion-run").value || 0), m = D.confusion[r], box = $("confusion");
    var h = "<table><thead><tr><th>true ↓ predicted →</th>";
    D.classes.forEach(function (n) { h += "<th>" + esc(n) + "</th>"; });
    h += "</tr></thead><tbody>";
    m.forEach(function (rowCounts, a) {
      var total = rowCounts.reduce(function (s, v) { return s + v; }, 0);
      h += "<tr><th>" + esc(D.classes[a]) + "</th>";
      rowCounts.forEach(function (n, b) {
        var share = total ? n / total : 0, on = state.cell && state.cell.r === r &&
          state.cell.a === a && state.cell.b === b;
        var title = D.classes[a] + " → " + D.classes[b] + ": " + NUM.format(n) + " px (" +
          (100 * share).toFixed(2) + "% of the row)";
        var cls = (n ? "" : "empty") + (on ? " on" : ""), style = "", text = "·";
        if (n) {
          text = share >= 0.995 ? "100" : share >= 0.01 ? (100 * share).toFixed(0) : "<1";
          style = "background:hsla(" + (a === b ? 130 : 5) + ",70%,45%," +
            (0.08 + 0.8 * Math.sqrt(share)).toFixed(3) + ")";
        }
        h += '<td data-cell="' + a + "," + b + '" title="' + esc(title) + '"' +
          (cls.trim() ? ' class="' + cls.trim() + '"' : "") + (style ? ' style="' + style + '"' : "") +
          ">" + esc(text) + "</td>";
      });
      h += "</tr>";
    });
    box.innerHTML = h + "</tbody></table>";
  }
  $("confusion").addEventListener("click", function (e) {
    var td = e.target.closest("td[data-cell]");
    if (!td || td.classList.contains("empty")) return;
    var ab = td.getAttribute("data-cell").split(",");
    state.cell = { r: +($("confusion-run").value || 0), a: +ab[0], b: +ab[1] };
    $("confusion").querySelectorAll("td.on").forEach(function (x) { x.classList.remove("on"); });
    td.classList.add("on");
    render();
  });

  // ------------------------------------------------------------ start
  function options(select, pairs) {
    pairs.forEach(function (p) { select.appendChild(el("option", { value: p[0] }, p[1])); });
  }
  options($("sort"), Object.keys(SORTS).map(function (k) { return [k, SORTS[k][0]]; }));
  var classes = [];
  for (var c = 0; c < OFF; c++) classes.push([c, D.classes[c]]);
  options($("sort-class"), classes);
  options($("filter-class"), classes);
  var groups = D.groups || [];  // cities, conditions: per_image.csv's group column
  options($("filter-group"), groups.map(function (g, i) { return [i, g]; }));
  $("filter-group-label").hidden = groups.length < 2;
  options($("confusion-run"), D.runs.map(function (run, r) { return [r, runName(r) + ": " + run.name]; }));
  $("confusion-run").hidden = R < 2;
  ["sort", "sort-class", "filter-class", "filter-group"].forEach(function (id) {
    $(id).addEventListener("change", function () { render(false); });
  });
  $("confusion-run").addEventListener("change", drawConfusion);
  $("opacity").addEventListener("input", function (e) {
    document.documentElement.style.setProperty("--mask-opacity", e.target.value / 100);
  });
  document.addEventListener("keydown", function (e) {
    var tag = (e.target && e.target.tagName) || "";
    if (tag === "SELECT" || tag === "TEXTAREA" || (tag === "INPUT" && e.target.type !== "checkbox")) return;
    if (e.key === "ArrowRight" || e.key === "ArrowDown") { move(1); e.preventDefault(); }
    if (e.key === "ArrowLeft" || e.key === "ArrowUp") { move(-1); e.preventDefault(); }
  });
  setFilter();
  buildPanels();
  buildLegend();
  drawConfusion();
  render(false);
  var wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted) {
    var at = D.images.findIndex(function (im) { return im.s === wanted; });
    if (at >= 0) select(at);
  }
})();
