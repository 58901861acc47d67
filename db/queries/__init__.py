"""Query and service functions: they take a session and never commit (the boundary does)."""
