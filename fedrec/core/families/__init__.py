"""Model families: every recommender a run can train, behind one contract (:mod:`.base`)."""
