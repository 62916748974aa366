"""Pure-torch algorithm pieces with no model knowledge."""
