"""A user's own networks, as foldwise cross-validates them (README "Your own model")."""
