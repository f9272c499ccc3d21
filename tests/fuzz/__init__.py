"""Fuzzing and property tests: config loading, filter patterns, cron schedules, IPC framing
and the HTTP API's OpenAPI contract."""
