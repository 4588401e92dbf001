"""A user's own networks, as foldwise cross-validates them (docs/models.md, "Your own model")."""
