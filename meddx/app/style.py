"""How the page looks and what runs in the browser: the banner, the CSS and the page's small scripts.
Presentation only; no event wiring and no Gradio components here (`meddx.app.page` builds those)."""

from __future__ import annotations

BANNER = (
    '<div class="meddx-banner" role="note"><strong>Decision support, not a diagnosis.</strong> Scores are '
    "outputs of the model named under “Model and privacy”, not measured clinical accuracy; a qualified "
    "clinician must review the image and make every clinical decision.</div>"
)
RANDOM_WEIGHTS_BANNER = (
    '<div class="meddx-banner meddx-random" role="alert"><strong>Test model with random weights.</strong> '
    "This server runs a model made by <code>make-tiny-model</code> for trying the page offline: its scores "
    "mean nothing at all. Use a real model (see the README's Quick start) for anything else.</div>"
)
"""Shown under `BANNER` when the model folder says its weights are random (`views.random_weights`)."""
CSS = """
.meddx-banner { background: #fff8e6; border-left: 6px solid #f0b429; border-radius: 8px;
  padding: 10px 14px; color: #3e2c00; font-size: 0.95rem; line-height: 1.45; }
.dark .meddx-banner { background: #3b2f0b; color: #fff3c4; }
.meddx-title h1 { margin: 4px 0 0; font-size: 1.6rem; }
.meddx-title p { margin: 2px 0 6px; opacity: 0.8; }
.meddx-alert { border-left: 5px solid #e8590c; background: #fff4e6; color: #5c2b00; padding: 6px 10px;
  margin: 4px 0; border-radius: 6px; }
.dark .meddx-alert { background: #3d2410; color: #ffe8cc; }
.meddx-findings { width: 100%; border-collapse: collapse; font-size: 0.92rem; }
.meddx-findings caption { text-align: left; font-weight: 600; padding: 4px 0 8px; }
.meddx-findings th, .meddx-findings td { border-bottom: 1px solid #dee2e6; padding: 6px 8px;
  vertical-align: top; text-align: left; }
.meddx-findings ul { margin: 2px 0 0 1rem; padding: 0; }
.meddx-flag { font-weight: 700; color: #c92a2a; }
.dark .meddx-flag { color: #ffa8a8; }
.meddx-muted { opacity: 0.7; }
.meddx-report { overflow-x: auto; }
.meddx-report th, .meddx-report td { word-break: normal; overflow-wrap: normal; padding: 4px 8px; }
footer { flex-wrap: wrap; }
#meddx-maps .caption { display: none; }  /* each map's full caption is listed under the gallery */
.meddx-captions { margin: 4px 0 0 1.2rem; padding: 0; font-size: 0.88rem; line-height: 1.4; }
.meddx-captions li { margin-bottom: 4px; }
.meddx-random { background: #ffe3e3; border-left-color: #e03131; color: #5c0011; margin-top: 6px; }
.dark .meddx-random { background: #4a1414; color: #ffe3e3; }
.meddx-stale { border-left: 6px solid #c92a2a; background: #fff5f5; color: #5c0011; padding: 8px 12px;
  border-radius: 6px; font-weight: 600; }
.dark .meddx-stale { background: #4a1414; color: #ffe3e3; }
.meddx-bar { display: inline-block; width: 64px; height: 8px; background: #e9ecef; border-radius: 4px;
  margin-right: 6px; vertical-align: middle; overflow: hidden; }
.meddx-bar > span { display: block; height: 100%; background: #495057; }
.dark .meddx-bar { background: #343a40; } .dark .meddx-bar > span { background: #ced4da; }
.meddx-value { font-variant-numeric: tabular-nums; white-space: nowrap; }
.meddx-more summary { cursor: pointer; font-weight: 600; padding: 6px 0; color: #1c7ed6; }
.meddx-maplink { cursor: pointer; text-decoration: underline; background: none; border: 0; padding: 0;
  color: inherit; font: inherit; }
@media (max-width: 640px) {
  /* One card per row; short cells share a line, each named by its column. */
  .meddx-findings thead, .meddx-report thead { position: absolute; left: -9999px; }
  .meddx-findings, .meddx-findings tbody, .meddx-findings tr, .meddx-findings caption,
  .meddx-report table, .meddx-report tbody, .meddx-report tr { display: block; width: 100%; }
  .meddx-findings tr, .meddx-report tr { border: 1px solid #dee2e6; border-radius: 8px; margin: 0 0 8px;
    padding: 4px 0; }
  .meddx-findings td, .meddx-report td { display: inline-block; max-width: 100%; border: none;
    padding: 2px 10px; overflow-wrap: anywhere; vertical-align: top; }
  .meddx-findings td[data-label="Finding"], .meddx-findings td[data-label="What the notes change"] {
    display: block; }
  .meddx-findings td[data-label="What the notes change"]:empty { display: none; }
  .meddx-findings td[data-label]::before, .meddx-report td[data-label]::before {
    content: attr(data-label) ": "; font-weight: 600; }
  .meddx-report { overflow-x: visible; }
}
@media print {
  .meddx-banner { border: 1px solid #999; }
}
"""
JS = """
() => {
  // Ctrl+Enter (Cmd+Enter) anywhere on the page presses Analyze.
  document.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
      const button = document.getElementById('meddx-analyze');
      if (button) { event.preventDefault(); button.click(); }
    }
  });
  // Report tables stack into one card per row on a phone: each cell carries its column's name.
  const label = () => document.querySelectorAll('.meddx-report table').forEach((table) => {
    const names = Array.from(table.querySelectorAll('thead th')).map((th) => th.textContent.trim());
    table.querySelectorAll('tbody tr').forEach((row) => Array.from(row.children).forEach((cell, i) => {
      if (names[i] && cell.dataset.label !== names[i]) cell.dataset.label = names[i];
    }));
  });
  new MutationObserver(label).observe(document.body, { childList: true, subtree: true });
  // "map n below" in the findings table shows that map in the gallery under it.
  document.addEventListener('click', (event) => {
    const link = event.target.closest('[data-map-index]');
    if (!link) return;
    const gallery = document.getElementById('meddx-maps');
    if (!gallery) return;
    const thumbs = gallery.querySelectorAll('.thumbnail-item');
    const thumb = thumbs[Number(link.dataset.mapIndex)];
    if (thumb) thumb.click();
    gallery.scrollIntoView({ behavior: 'smooth', block: 'start' });
  });
}
"""
SCROLL_TO_RESULTS = """
() => {
  const results = document.getElementById('meddx-results');
  if (results && results.getBoundingClientRect().top > window.innerHeight * 0.5) {
    results.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }
}
"""
