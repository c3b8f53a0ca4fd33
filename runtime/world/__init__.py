"""Everything a world is — scene, frame memory, coverage, generators, reconstruction,
rendering, movement and storage — with no networking in it."""
