"""The study: what turns KTO, KTO-S and KTO-zero runs into an answer, one stage after another.

It imports the library (:mod:`ktos`) and the embedded task (:mod:`ktos.toy`); the library never imports it.

* Training: :mod:`~ktos.runs.command`, :mod:`~ktos.runs.run`: ``ktos train``'s arguments and runs, and one
  training run with its run directory; :mod:`~ktos.runnames`, :mod:`~ktos.study.rundir`,
  :mod:`~ktos.runs.trajectory`: run names, the run-directory format, its per-step trajectory writer and the
  tidy table (``ktos extract-kl``).
* Readings: :mod:`~ktos.study.stats`, :mod:`~ktos.study.analysis` (the per-run, per-cell and paired tables),
  :mod:`~ktos.study.trend_rules` (keeps rising or levels off), :mod:`~ktos.study.base_factor` (over bases),
  :mod:`~ktos.study.checkpoint_envelope` (the envelope and early stopping over checkpoints),
  :mod:`~ktos.study.matched_frontier` (accuracy at matched KL over item sets), :mod:`~ktos.study.scale` (the
  size law).
* Tables: :mod:`~ktos.study.tables`: every table of a study, computed once; both output stages read it.
* Output: :mod:`~ktos.study.prose` (all of the verdict's text) and :mod:`~ktos.study.verdict` (``ktos
  tables``: the table files and ``verdict.md``); :mod:`~ktos.study.figures` (``ktos figures``),
  :mod:`~ktos.study.base_figures`, :mod:`~ktos.study.scale_and_frontier_figures`, :mod:`~ktos.study.figure_style`.
* Planning: :mod:`~ktos.study.planning`, :mod:`~ktos.study.outputs`: the workflow's jobs and files.
"""
