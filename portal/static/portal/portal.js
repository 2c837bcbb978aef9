// The portal's own script: the dashboard's chart and the copy button. Everything else is
// plain HTML and htmx; without JavaScript every page still works (forms post, links navigate).
(function () {
  "use strict";

  function drawThroughput(element) {
    var data = JSON.parse(document.getElementById("throughput-data").textContent);
    var colours = ["#176c2f", "#a4161a", "#0b5cad"];
    var series = [{}].concat(data.series.map(function (s, i) {
      return { label: s.label, stroke: colours[i], width: 2, fill: colours[i] + "22" };
    }));
    var columns = [data.x].concat(data.series.map(function (s) { return s.values; }));
    var options = { width: element.clientWidth || 600, height: 240, series: series,
                    axes: [{}, { label: "jobs" }] };
    var plot = new window.uPlot(options, columns, element);
    window.addEventListener("resize", function () {
      plot.setSize({ width: element.clientWidth, height: 240 });
    });
  }

  function setUp() {
    var chart = document.querySelector("[data-chart=throughput]");
    if (chart && window.uPlot) { drawThroughput(chart); }
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
