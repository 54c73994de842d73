// Loads the MathJax 2 copied into assets/mathjax by book/build.py (from the jupyter-server-mathjax
// package), relative to this script, so the maths renders with no internet. Notebook pages load the
// same copy themselves (mkdocs-jupyter's custom_mathjax_url); then this does nothing.
(function () {
  if (window.MathJax) return;
  var here = document.currentScript.src.replace(/[^\/]*$/, "");
  window.MathJax = {
    messageStyle: "none",
    tex2jax: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true},
    "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null}
  };
  var s = document.createElement("script");
  s.src = here + "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/latro";
  document.head.appendChild(s);
})();
