"""The streaming worker: source -> decode -> history -> fold-in -> top-N -> sink."""
