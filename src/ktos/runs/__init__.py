"""``ktos train``: its arguments (:mod:`~ktos.runs.command`), one training run and its run directory
(:mod:`~ktos.runs.run`), the per-step trajectory writer (:mod:`~ktos.runs.trajectory`), resuming
(:mod:`~ktos.runs.resume`) and the run directory's files (:mod:`~ktos.runs.files`). Part of the library: it imports
nothing from :mod:`ktos.study`; the toy's task accuracy (:mod:`ktos.toy.quality`) is its measure of quality on
held-out items."""
