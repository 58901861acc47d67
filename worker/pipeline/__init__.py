"""Pipeline stages, one module each: decode → segment → (prosody) → emotion → persist."""
