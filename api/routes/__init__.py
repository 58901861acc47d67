"""Route modules, one per resource; api.main mounts them."""
