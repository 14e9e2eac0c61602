/* voxledger console: times in the browser's zone, moving through a timeline from the
   keyboard, travelling with the version slider, and the live tail (server-sent events).
   Every page works without this script; it only makes them quicker to use. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // -- times --------------------------------------------------------------------------------
  // A zone chosen on the server (?tz=) wins; else the browser's own.
  var zone = document.body.dataset.zone || Intl.DateTimeFormat().resolvedOptions().timeZone;
  var parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
  });

  function pad(n, width) { return String(n).padStart(width, "0"); }

  // The same formats as the server's (rendering.py TIME_FORMATS).
  function format(date, fmt) {
    var p = {};
    parts.formatToParts(date).forEach(function (part) { p[part.type] = part.value; });
    var ms = pad(date.getUTCMilliseconds(), 3);
    var day = p.year + "-" + p.month + "-" + p.day;
    var time = p.hour + ":" + p.minute + ":" + p.second;
    switch (fmt) {
      case "precise": return day + " " + time + "." + ms;
      case "stamp": return p.month + "-" + p.day + " " + time + "." + ms;
      case "minute": return day + " " + p.hour + ":" + p.minute;
      case "hour": return p.month + "-" + p.day + " " + p.hour + ":" + p.minute;
      case "clock": return p.hour + ":" + p.minute;
      default: return day + " " + time;
    }
  }

  function formatTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      el.textContent = format(new Date(el.getAttribute("datetime")), el.dataset.fmt);
    });
    root.querySelectorAll("text[data-time]").forEach(function (el) {
      el.textContent = format(new Date(el.dataset.time), el.dataset.fmt);
    });
  }
  formatTimes(document);

  var zoneInput = document.querySelector("[data-zone-input]");
  if (zoneInput && !zoneInput.value) { zoneInput.placeholder = zone + " (browser)"; }
  document.querySelectorAll("[data-browser-zone]").forEach(function (el) { el.value = zone; });

  // -- keyboard -------------------------------------------------------------------------------
  var timeline = document.querySelector("[data-timeline]");

  function typing(target) {
    return target.closest("input, select, textarea, [contenteditable]") !== null;
  }

  function travelLinks() {
    return timeline ? Array.prototype.slice.call(timeline.querySelectorAll("a.travel")) : [];
  }

  function focusRow(link) {
    link.focus({ preventScroll: true });
    link.closest("tr").scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    var links = travelLinks();
    if (!links.length) { return; }
    var at = links.indexOf(document.activeElement);
    if (at < 0) {
      var current = timeline.querySelector("a.travel[aria-current]");
      at = current ? links.indexOf(current) : (step > 0 ? -1 : links.length);
    }
    focusRow(links[Math.max(0, Math.min(links.length - 1, at + step))]);
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || typing(event.target)) { return; }
    var inTimeline = timeline && timeline.contains(document.activeElement);
    if (event.key === "j" || (inTimeline && event.key === "ArrowDown")) {
      move(1); event.preventDefault();
    } else if (event.key === "k" || (inTimeline && event.key === "ArrowUp")) {
      move(-1); event.preventDefault();
    } else if (event.key === "[" || event.key === "]") {
      var link = document.querySelector('a[data-key="' + event.key + '"]:not([aria-disabled])');
      if (link) { link.click(); event.preventDefault(); }
    } else if (event.key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) { search.focus(); search.select(); event.preventDefault(); }
    }
  });

  // On arrival, the event travelled to is in view (and focused when the link said so).
  // After the load: the browser's own move to the #fragment comes first.
  function arrive() {
    var target = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    var row = (target && timeline.contains(target)) ? target : timeline.querySelector("tr.selected");
    if (target && target === row) { window.scrollTo(0, 0); }  // the timeline scrolls, not the page
    if (row) {
      timeline.scrollTop = row.offsetTop - timeline.clientHeight / 2;
      var own = row.querySelector("a.travel");
      if (target === row && own) { own.focus({ preventScroll: true }); }
    }
  }
  if (timeline) {
    if (document.readyState === "complete") { arrive(); }
    else { window.addEventListener("load", function () { setTimeout(arrive, 0); }); }
  }

  // -- travelling with the slider -------------------------------------------------------------
  var range = document.querySelector("[data-travel-range]");
  if (range) {
    var form = range.form;
    var number = form.querySelector("input[name=v]");
    var pending = null;
    range.addEventListener("input", function () { number.value = range.value; });
    range.addEventListener("change", function () {
      number.value = range.value;
      clearTimeout(pending);
      pending = setTimeout(function () { form.submit(); }, 350);
    });
  }

  // -- the live tail --------------------------------------------------------------------------
  if (timeline && timeline.dataset.tail && window.EventSource) {
    var status = document.querySelector("[data-live-status]");
    var banner = document.querySelector("[data-new-events]");
    var counter = document.querySelector("[data-new-count]");
    var body = timeline.querySelector("[data-entries]");
    var arrived = 0;
    var source = new EventSource(timeline.dataset.tail);
    status.textContent = "connecting…";
    source.addEventListener("open", function () {
      status.textContent = "● live";
      status.classList.add("on");
    });
    source.addEventListener("error", function () {
      status.classList.remove("on");
      status.textContent = source.readyState === EventSource.CLOSED
        ? "live tail stopped: reload the page" : "reconnecting…";
    });
    source.addEventListener("entry", function (message) {
      var entry = JSON.parse(message.data);
      if (document.getElementById(entry.id)) { return; }  // seen before a reconnect
      arrived += 1;
      counter.textContent = String(arrived);
      banner.hidden = false;
      if (timeline.dataset.atEnd !== "yes") { return; }  // a window of older events
      var following = timeline.scrollTop + timeline.clientHeight >= timeline.scrollHeight - 40;
      body.insertAdjacentHTML("beforeend", entry.html);
      var added = document.getElementById(entry.id);
      added.classList.add("new");
      formatTimes(added);
      if (following) { timeline.scrollTop = timeline.scrollHeight; }
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
})();
