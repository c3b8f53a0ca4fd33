"""Benchmarks (run as ``python -m bench.NAME`` from the repository root) and the helpers they
share with the tests: synthetic scenes (:mod:`.synthetic`) and picture comparison (:mod:`.compare`)."""
