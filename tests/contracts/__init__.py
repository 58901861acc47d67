"""Design rules of docs/DESIGN.md as tests."""
