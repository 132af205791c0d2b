"""One module per subcommand: add_parser(subparsers) and run(args)."""
from __future__ import annotations

import argparse


def command_parser(sub, name: str, *, help: str, description: str, examples: str):
    """A subcommand parser in the house style: description, then examples."""
    return sub.add_parser(name, help=help, description=description, epilog=examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
