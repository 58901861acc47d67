"""Stage bodies, one module per queue concern. Each is a transaction boundary: it takes ids, locks the
recording row, does only what is missing and returns its follow-ups, to be enqueued after commit by
a Celery task (`worker.jobs`) or run in process by `callpulse analyze`."""
