"""Faces in video recordings: frame sampling, face detection and expression classification."""
