"""A kit shipped with shopfloor for its own tests and for plugin authors' tests."""
