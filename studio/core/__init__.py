"""The studio's shared words and facts: no torch, no yaml, safe to import from anywhere."""
