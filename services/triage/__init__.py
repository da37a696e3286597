"""triage: category, priority, due times, duplicates and incidents for each complaint."""
