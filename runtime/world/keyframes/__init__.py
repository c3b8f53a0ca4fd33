"""Generated keyframes: the :class:`.frames.Frame` unit, the frame memory that keeps and
retrieves them (:mod:`.memory`), and their reconstruction into Gaussians (:mod:`.reconstruct`)."""
