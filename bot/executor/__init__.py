"""The executor: a job's steps, from the workspace and sandbox through the agent and the tests
to the push."""
