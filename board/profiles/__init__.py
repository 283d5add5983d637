"""Board pin maps (TOML), loaded by board.profile."""
