"""The coding agent: a tool loop over any model, budgets, transcripts and external CLIs."""
