"""GitHub's heading anchors where Markdown is tricky, and `stackprobe rules` rewriting rule
files in place of the shipped ones: only the rewritten values may change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackprobe.tools.runbooks import anchors, headings, render


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("## `#` and `*` in code\n", ["-and--in-code"]),
        ("## ``a ` b`` span\n", ["a--b-span"]),
        ("## Foo ##\n", ["foo"]),
        ("## ***Bold italic*** and __strong__\n", ["bold-italic-and-strong"]),
        ("## [text][ref]\n\n[ref]: https://x.io\n", ["text"]),
        ("## <kbd>Ctrl</kbd>+C\n", ["ctrlc"]),
        ("## Tag <!-- hidden --> end\n", ["tag--end"]),
        ("## &lt;tag&gt; &amp; more\n", ["tag--more"]),
        # an <img> has no text content: only the space after it is left
        ("## ![logo](logo.png) Title\n", ["-title"]),
        ("Setext one\n==========\n\nSetext two\n----------\n", ["setext-one", "setext-two"]),
        ("Two lines\nof heading\n===\n", ["two-linesof-heading"]),
        ("> ## Quoted\n", ["quoted"]),
        ("- ## In a list\n", ["in-a-list"]),
    ],
)
def test_anchors_of_rendered_headings(markdown: str, expected: list[str]) -> None:
    assert anchors(markdown) == expected


@pytest.mark.parametrize(
    "markdown",
    [
        "```sh\n# comment\n```\n",
        "~~~~\n## not\n~~~\n~~~~\n",  # a shorter fence does not close a longer one
        "- step\n\n  ```sh\n  # in a list item\n  ```\n",
        "    # indented code\n",
        "<pre>\n## raw HTML\n</pre>\n",
        "\\# escaped\n",
        "#hashtag\n",
        "| a |\n|---|\n",
        "- item\n---\n",
    ],
)
def test_no_heading_outside_of_headings(markdown: str) -> None:
    assert list(headings(markdown)) == []


def test_duplicates_numbered_around_a_heading_that_looks_numbered() -> None:
    markdown = "# Step\n## Step\n## Step-1\n```\n## Step\n```\n## Step\n"

    assert anchors(markdown) == ["step", "step-1", "step-1-1", "step-2"]


RULES = """\
# header comment
---
# Area comment.
groups:
  - name: edge
    rules:
      - alert: Folded
        expr: >-
          sum by (x) (rate(foo_total{a="b"}[5m]))
            > 0.5
          and on (x)   bar
        # why 5m
        for: 5m
        labels: {priority: P1, runbook_url: 'https://old.example/rb#folded'}
        annotations:
          description: |
            Line one {{ $labels.x }}
              indented line
          runbook_url: 'https://old.example/rb#folded'   # kept comment
          dashboard_url: "https://grafana.example.com/d/x?viewPanel=1"
      - alert: Other
        expr: up == 0
        annotations:
          runbook_url: https://old.example/rb#other
"""


def test_render_changes_only_the_rewritten_values(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "edge.rules.yml").write_text(RULES)
    (tmp_path / "in" / "same.rules.yml").write_text("groups:   [] # odd   spacing\n")
    mapping = {"Folded": "https://wiki.example/rb#new: section"}

    render(tmp_path / "in", mapping, tmp_path / "out", "https://grafana.corp/")

    written = (tmp_path / "out" / "edge.rules.yml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(RULES.splitlines(), written, strict=True) if a != b]
    assert changed == [
        (
            "        labels: {priority: P1, runbook_url: 'https://old.example/rb#folded'}",
            "        labels: {priority: P1, runbook_url: 'https://wiki.example/rb#new: section'}",
        ),
        (
            "          runbook_url: 'https://old.example/rb#folded'   # kept comment",
            "          runbook_url: 'https://wiki.example/rb#new: section' # kept comment",
        ),
        (
            '          dashboard_url: "https://grafana.example.com/d/x?viewPanel=1"',
            '          dashboard_url: "https://grafana.corp/d/x?viewPanel=1"',
        ),
    ]
    # a file with nothing to change is copied byte for byte
    assert (tmp_path / "out" / "same.rules.yml").read_text() == "groups:   [] # odd   spacing\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("groups:\n  - name: x\n    rules: [oops\n", "bad.rules.yml, line 4, column 1: expected"),
        (
            "groups: []\ngroups: []\n",
            'bad.rules.yml, line 2, column 1: found duplicate key "groups"',
        ),
    ],
)
def test_a_broken_rule_file_is_one_line_and_exit_1(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.rules.yml").write_text(text)

    done = subprocess.run(
        [sys.executable, "-m", "stackprobe", "rules", "--rules", tmp_path, "--out", tmp_path / "o"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert done.stderr.startswith("stackprobe rules: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
