"""The sentences Handoff says on GitHub outside the templates of prompts/ (short ones, filled
in by code: a verdict's title and risks, a refusal, a resumed job), so tests assert the same text.
Templates reach them as ``wording`` (``{{ wording.WHY_NO_COMMAND }}``)."""

from __future__ import annotations

QUEUED = "Position {position} in the queue; it starts when a worker is free."
RESUMED = ("Resumed: the attempt before stopped at “{stage}” (its worker stopped or was lost); "
           "this attempt goes on from what was saved.")
PAUSED = ("The worker running this job was stopped (a restart or a deploy). The job is back in "
          "the queue and resumes when a worker is free; this does not count as a failed "
          "attempt.")
ALREADY_UNDER_WAY = ("@{login}, Handoff's job {job} already has this ({state}), so no second job "
                     "starts. Its status comment follows it; `/cancel` stops it, and `/retry "
                     "<feedback>` on its pull request asks for another iteration.")
CANCEL_REFUSED = ("@{login}, only people with write access to {repo} can cancel Handoff's "
                  "work (you have {role} access), so the job goes on. A maintainer can "
                  "cancel it with `/cancel`.")
CLOSE_REFUSED = ("@{login}, closing the issue does not stop Handoff's job under way: only people "
                 "with write access to {repo} can stop it (you have {role} access), so it goes "
                 "on. A maintainer can stop it with `/cancel`.")
NOT_PERMITTED = ("@{login} has {role} access to {repo}; Handoff takes work only from people "
                 "with write access")
NO_INSTALLATION = "the delivery named no installation of the App"
NO_CHANGES = "the agent finished without changing any file: {summary}"
SETUP_WARNING = "the dependencies could not be installed: {why}"
SETUP_OFFLINE = ("it ran without network, because this branch changes files that decide what "
                 "a setup installs or runs ({files}); dependencies it could not install offline "
                 "are missing")
PUSH_REFUSED = "GitHub refused the push to {branch}: {error}"
RESUMED_AFTER_PUSH = ("Resumed: the change was pushed already (commit {head}); opening the pull "
                      "request.")
EARLIER_PUSH = ("Job {job} pushed this change (commit {head}) but could not open its pull "
                "request; opening it now, without running the agent again.")
RESUMED_WITH_COMMIT = ("Resumed: the change was made already (commit {head}); pushing it and "
                       "opening the pull request, without running the agent again.")
INSTALLING = "Installing: {command}"
WARM_START = "Starting warm: the environment kept after an earlier setup ({reason})"
SETUP_STEP = "Setup step {number} of {count}, {name}: {command}"
SETUP_STEPS_REASON = "{steps}, set as `setup` in `.github/handoff.yml`"
SETUP_STEP_FAILED = ("the setup step {name} ended with {why}; the agent did not start. The "
                     "end of its output:\n\n{tail}")
SECRETS_MISSING = ("the setup step(s) {steps} need the secret(s) {names}, which are not set for "
                   "{repo}: an operator sets them with `handoff secrets set repo {repo} NAME` "
                   "(or for the organisation or installation)")
SECRETS_UNREADABLE = "the secrets the setup steps need cannot be read: {why}"
SECRET_LEFT = ("a setup step left a secret in files that could not be cleaned before the "
               "agent started: {files}")
STARTING_AGENT = "Starting the agent"
# A commit's title names the issue, never the agent's words (they could close other issues).
COMMIT_TITLES = {"implement": "Fix #{number}: {title}",
                 "retry": "Rework #{number} after /retry: {title}",
                 "review": "Address the review on #{number}: {title}",
                 "ci-fix": "Fix the checks on #{number}: {title}",
                 "mention": "Answer a request on #{number}: {title}",
                 "rebase": "Merge the base branch into #{number}'s branch: {title}"}
WIP_TITLE = "WIP: stopped early ({why})"
ADDRESSED = "Addressed in {head}:\n\n{answer}"
EDIT_LEFT_OUT = "an edit of the issue by @{login}"
EDITS_LEFT_OUT = "{count} edits of the issue by @{login}"
LATER_CHANGE_LEFT_OUT = ("a change to the issue made after it was handed over, by someone not "
                         "confirmed as a writer")
INTERNAL_CAUSE = ("an internal error in Handoff (job {job}); what went wrong is in the worker's "
                  "log and on the dashboard")

# -- the verdict: titles of the check run, risks for reviewers, why tests did not run ----------

TITLE_READY = "Agent change ready for review"
TITLE_REGRESSED = "Failed: tests-regressed"
TITLE_NOT_RUN = "Tests not run"
TITLE_UNPROVEN = "Nothing shows the issue's behaviour changed"
RISK_NO_EVIDENCE = "no test was added and no previously failing test now passes"
RISK_NEW_FAILURES = "{count} test(s) fail after the change that did not fail before: {names}"
RISK_BROKE = "the test command passed on the base commit and fails after the change"
RISK_MORE_FAILURES = ("more tests fail after the change ({after}) than before ({before}); the "
                      "runner's output does not name them all")
RISK_TIMED_OUT = "the tests timed out after the change ({detail})"
RISK_NOT_RUN = "the tests were not run: {why}"
RISK_LAST_CHECK = ("the agent's last check before finishing failed ({command}), and nothing "
                   "else shows the issue's behaviour changed")
WHY_NO_COMMAND = ("no `test_command` is set in `.github/handoff.yml` and none was found in the "
                  "repository")
WHY_CONFIG = ("{detail}; that is a configuration error, not a test failure: set `test_command` "
              "in `.github/handoff.yml` to a command the sandbox image has")
WHY_SETUP_FAILED = ("{detail}, after the setup failed ({setup}): the tests need what it did not "
                    "install, so the fix is the setup (`setup_command` in `.github/handoff.yml`) "
                    "or what it reaches, not the test command")
WHY_NO_TESTS = "the test command ran no test ({detail})"
WHY_COULD_NOT_RUN = ("the test command could not run, it stopped before any test ran ({detail}); "
                     "that is no test failure")
WHY_SERVICE = ("the tests need {needs}, which the sandbox does not have: they connect to it and "
               "are refused, so no test could pass here; that is no test failure (the CI that "
               "starts the service runs them)")
WHY_BASELINE = "the tests could not run on the base commit ({line})"

# What the agent got beside its spec (the PR's "Inputs the agent saw"), and the notes the
# model reads where it cannot see the images.
MCP_NOT_FOR_CLI = ("MCP servers left out: {agent} takes no MCP servers (the built-in agent, "
                   "Claude Code and Codex CLI get them)")
IMAGES_FOR_CLI = "{count} image{s}: alt text only (an agent CLI gets the spec only)"
IMAGES_TEXT_ONLY = "{count} image{s}: alt text only (the model {model} takes no images)"
IMAGE_SEEN = "image {number} from {source} ({media_type}, {size})"
TEXT_ONLY_NOTE = ("(The issue shows {count} image{s} where it says [image N: ...]; this model "
                  "takes no images, so only their alt text is given.)")
NOT_SHOWN_NOTE = "(Images not shown to you, only their alt text: {numbers}.)"

# The PR's "Network access refused", per kind of refusal (proxy_server.KINDS): what it was and
# what to do about it.
EGRESS_REFUSED = {
    "not-listed": ("Not on the egress allowlist (in `.github/handoff.yml`, add them to "
                   "`network.allow` or a setup step's `network` if the setup needs them, to "
                   "`network.agent` if the agent's commands do):"),
    "non-public": ("On the allowlist, but resolving to a loopback, private, shared or link-local "
                   "address, which sandboxes may not reach (for a private mirror, Handoff's "
                   "operator can set `HANDOFF_EGRESS_UPSTREAM_PROXY`):"),
    "dns": "On the allowlist, but their names did not resolve (a typo, or no DNS for Handoff):",
    "unreachable": "On the allowlist, but the connection to them failed or timed out:",
    "mismatch": ("Refused because the request named another host than it connected to (its "
                 "`Host` header or TLS name), which the egress proxy never allows:"),
    "unnamed": "And more, not named:",
}

# /rebase: merging the base branch into the agent branch.
MERGE_MESSAGE = "Merge {base} into the branch of #{number}\n\nHandoff job {job} for #{number}.\n"
MERGED_CLEANLY = "Merged `{base}` ({base_sha}) into the branch without conflicts: {head}."
UP_TO_DATE = "The branch has every commit of `{base}` already ({base_sha}); nothing to merge."
CONFLICTS_LEFT = ("the agent left conflict markers in {files}; nothing was pushed. Resolve "
                  "them by hand, or comment `/rebase` to try again")
RESOLVED = "Merged `{base}` into the branch; resolved conflicts in {files}."
