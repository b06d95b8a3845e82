"""The worker layer: the consumer loop, task execution and the process entry (run_worker)."""
