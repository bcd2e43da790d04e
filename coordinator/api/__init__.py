"""The coordinator's REST API (FastAPI): thin routes over `coordinator.jobs.JobService` and the store."""
