"""Cost accounting: GPU prices and the month-to-date meter of GPU-hours, dollars and output tokens (pure)."""
