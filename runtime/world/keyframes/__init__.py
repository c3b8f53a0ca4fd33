"""Generated keyframes: the :class:`.frames.Frame` unit, the frame memory that keeps and
retrieves them (:mod:`.memory`), their reconstruction into Gaussians (:mod:`.reconstruct`),
and the start image as keyframe 0 (:mod:`.start_frame`)."""
