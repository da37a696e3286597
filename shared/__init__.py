"""The project's common library: what all four services share, written once."""
