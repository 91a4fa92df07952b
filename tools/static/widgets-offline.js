/* Lets the ipywidgets HTML manager (@jupyter-widgets/html-manager 1.x) run from the book's own copy.
   Loaded by myst-nb between require.js and html-manager/embed-amd.js, on pages with saved widgets.
   1. requirejs maps the manager's module id to _static/html-manager/, so the icon fonts it references
      (located relative to that module) load from the book rather than from beside each page.
   2. The manager typesets widget labels with the MathJax 2 call MathJax.Hub.Queue; the book loads
      MathJax 3, so that call is routed to MathJax.typesetPromise. */
(function () {
  var staticRoot = document.currentScript.src.replace(/[^/]*$/, "");
  window.require.config({paths: {"@jupyter-widgets/html-manager/dist": staticRoot + "html-manager"}});

  function typeset(command) {
    var mj = window.MathJax, element = command && command[2];
    if (!mj || !mj.startup || !element) return;
    mj.startup.promise.then(function () { return mj.typesetPromise([element]); })
      .catch(function (err) { console.warn("MathJax could not typeset a widget label:", err); });
  }
  function install() {
    var mj = window.MathJax;
    if (mj && mj.version && mj.version.charAt(0) === "3" && !mj.Hub) mj.Hub = {Queue: typeset};
  }
  // MathJax 3 is loaded with `defer`: it replaces window.MathJax just before DOMContentLoaded.
  document.addEventListener("DOMContentLoaded", install);
  install();
})();
