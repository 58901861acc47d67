"""Task names, as the broker carries them. Senders that must not import a task's module (the API,
which never loads the pipeline) send by these names; routing in `app.py` matches on them."""

INGEST = "callpulse.ingest_recording"
SWEEP = "callpulse.sweep_stuck_recordings"
RETENTION = "callpulse.apply_retention"
INFER = "callpulse.infer_segments"
RESCORE = "callpulse.rescore_recording"
TRANSCRIBE = "callpulse.transcribe_recording"
EVALUATE = "callpulse.rules.evaluate_recording"
PUBLISH = "callpulse.notify.publish_recording_event"
DELIVER = "callpulse.notify.deliver"
SWEEP_DELIVERIES = "callpulse.notify.sweep_deliveries"
