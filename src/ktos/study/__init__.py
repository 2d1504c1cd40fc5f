"""The study: what turns KTO, KTO-S and KTO-zero runs into an answer, one stage per subpackage.

It imports the library (:mod:`ktos`, whose :mod:`ktos.runs` trains the runs) and the embedded task (:mod:`ktos.toy`);
the library never imports it.

* :mod:`~ktos.study.plan`: the workflow's jobs and files, read at parse time (``planning``, ``outputs``), and the
  configuration's key reference (``config_keys``).
* :mod:`~ktos.study.readings`: the tidy trajectory table (``rundir``: ``ktos extract-kl``), the statistics
  (``stats``), the per-run, per-cell and paired tables (``analysis``), keeps rising or levels off
  (``trend_rules``), over bases (``base_factor``), the envelope and early stopping over checkpoints
  (``checkpoint_envelope``), accuracy at matched KL over item sets (``matched_frontier``) and from fitted curves
  (``curve_frontier``, ``power``), the size law (``scale``), and every table of a study computed once (``tables``).
* :mod:`~ktos.study.report`: the figures (``figures``: ``ktos figures``; ``base_figures``, ``policy_kl_figures``,
  ``scale_and_frontier_figures``, ``figure_style``), the table files and ``verdict.md`` (``verdict``: ``ktos
  tables``) and all of the words (``prose``, the README's answer included).
"""
