"""Backends for checkpoints released for FunASR (emotion2vec, SenseVoice), implemented here in torch."""
