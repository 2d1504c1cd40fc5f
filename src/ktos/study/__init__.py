"""The study: what turns KTO, KTO-S and KTO-zero runs into an answer.

It imports the library (:mod:`ktos`) and the embedded task (:mod:`ktos.toy`); the library never imports it.

* :mod:`~ktos.study.driver`, :mod:`~ktos.study.run`: ``ktos train``'s arguments and runs, and one training run
  with its run directory;
* :mod:`~ktos.study.runnames`, :mod:`~ktos.study.rundir`, :mod:`~ktos.study.trajectory`: run names, the
  run-directory format, its per-step trajectory writer and the tidy table (``ktos extract-kl``);
* :mod:`~ktos.study.stats`, :mod:`~ktos.study.analysis`, :mod:`~ktos.study.trends`,
  :mod:`~ktos.study.frontier`, :mod:`~ktos.study.scale`: the statistics and the study's readings;
* :mod:`~ktos.study.sentences`, :mod:`~ktos.study.verdict`: the findings in words, the tables and the computed
  verdict (``ktos tables``);
* :mod:`~ktos.study.figures`, :mod:`~ktos.study.figure_style`, :mod:`~ktos.study.readings_figures`: the
  figures (``ktos figures``).
"""
