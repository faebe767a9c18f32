"""One file of an agent's change, as the executor finds it and the reporter lists it."""

from __future__ import annotations

import re
from dataclasses import dataclass

TEST_PATH = re.compile(r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.[a-z]+$|[^/]*\.test\.[a-z]+$)")


@dataclass
class FileChange:
    path: str
    added: int
    removed: int
    new: bool = False  # the file is not in the base commit
    expectation_changed: bool = False  # a test that existed lost a line stating an expectation
