"""Training, evaluation and corpus loading for the shipped models (voice, text, face) and their
calibration. Kept out of the runtime package: workers and the API never import it, and it alone
needs scikit-learn. Entry points: `python -m training.voice`, `training.text`, `training.face`,
`training.independent`."""
