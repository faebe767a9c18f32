"""The reporter: everything Handoff writes on GitHub, and its wording."""
