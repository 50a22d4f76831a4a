"""Web pages of runs and studies: static HTML (Jinja2 templates), a style sheet, a little vanilla JavaScript.

* :mod:`bench.html.run_page`: ``<run>/index.html``, the metrics with their
  protocols, the config, the learning and BoxAcc(tau) curves, and a grid of
  every evaluated image (thumbnails by :mod:`bench.html.thumbnails`) with filters.
* :mod:`bench.html.study_page`: ``<study>/index.html``, the tables, the paired
  comparisons with their verdicts, the figures, and the same test image under
  every pooling side by side, filterable by where they disagree.

The pages open from the file system in any browser and make no network
request: every URL is relative and stays inside the results folder, and the
images are JPEG files beside the page. Nothing here is imported by the package
``__init__``: the pipeline imports the run page, the study runner the study page.
"""
