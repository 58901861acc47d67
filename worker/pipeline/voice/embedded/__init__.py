"""The default CPU backend: a feature extractor and two small heads shipped as arrays in worker/weights."""
