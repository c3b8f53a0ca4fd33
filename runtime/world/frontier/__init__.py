"""Generation at the frontier: which views need generating (:mod:`.coverage`, :mod:`.planner`),
the jobs that generate them (:mod:`.jobs`, :mod:`.runner`) and how a result lands in the
world (:mod:`.chunk_builder`)."""
