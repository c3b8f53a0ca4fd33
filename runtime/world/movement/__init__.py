"""Moving through a world: a player's step with ground following (:mod:`.motion`), collision
against the scene (:mod:`.collision`), and walking scripted camera paths (:mod:`.trajectory`)."""
