"""A place once seen looks the same: the views players were shown (:mod:`.seen_views`), what a
frozen view hides of later chunks (:mod:`.seen_masks`), and drawing cameras from them
(:mod:`.display`)."""
