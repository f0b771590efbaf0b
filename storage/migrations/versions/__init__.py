"""Migration scripts, one per schema revision, numbered 0001, 0002, ... in order."""
