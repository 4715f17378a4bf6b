"""`triggers validate`: load and compile a rules directory; every error as `file:line`."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.common import load_rules


def add_parser(subparsers: Any) -> None:
    v = subparsers.add_parser(
        "validate", help="check a rules directory; every error as file:line",
        description="Load and compile every *.yaml file of RULES_DIR. Exit 0 when valid; "
                    "otherwise print every error as `file:line: rule 'id': what is wrong` and exit 1.")
    v.add_argument("rules_dir", metavar="RULES_DIR", help="directory of rules files (or one file)")
    v.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules_dir)
    if rules is None:
        return 1
    rs = rules.ruleset
    print(f"{args.rules_dir}: OK ({len(rs.rules)} rules, {len(rs.aggregates)} aggregates, "
          f"{len(rs.files)} file(s){', contact policy' if rs.policy else ''})")
    return 0
