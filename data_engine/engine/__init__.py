"""The data engine as one loop: steps (each a stage) in order, resumable, with a report of the rounds."""
