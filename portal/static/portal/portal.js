// The portal's own script: the charts (dashboard, usage) and the copy button. Everything else is
// plain HTML and htmx; without JavaScript every page still works (forms post, links navigate).
(function () {
  "use strict";

  // A time-series chart from the JSON the page carries beside it (data-source names its
  // script element): {x: [unix seconds], series: [{label, values, dash?}], y_label?}.
  function drawChart(element) {
    var data = JSON.parse(document.getElementById(element.dataset.source).textContent);
    var colours = ["#176c2f", "#a4161a", "#0b5cad"];
    var series = [{}].concat(data.series.map(function (s, i) {
      var line = { label: s.label, stroke: colours[i], width: 2 };
      // A limit is a dashed line without points; a measure is filled below.
      if (s.dash) { line.dash = [6, 4]; line.points = { show: false }; } else { line.fill = colours[i] + "22"; }
      return line;
    }));
    var columns = [data.x].concat(data.series.map(function (s) { return s.values; }));
    var options = { width: element.clientWidth || 600, height: 240, series: series,
                    axes: [{}, { label: data.y_label || "jobs" }] };
    var plot = new window.uPlot(options, columns, element);
    window.addEventListener("resize", function () {
      plot.setSize({ width: element.clientWidth, height: 240 });
    });
  }

  function setUp() {
    if (window.uPlot) { document.querySelectorAll("[data-chart]").forEach(drawChart); }
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var field = document.querySelector(button.getAttribute("data-copy"));
        var note = button.parentElement.querySelector(".copied");
        field.select();
        var done = function () { if (note) { note.textContent = "Copied."; } };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(field.value).then(done, function () {
            if (note) { note.textContent = "Select the key and copy it."; }
          });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", setUp);
})();
