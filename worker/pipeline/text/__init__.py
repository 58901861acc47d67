"""Words: transcript parsing and indexing, and emotion from what is said."""
