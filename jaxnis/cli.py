"""The ``jaxnis`` command."""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jaxnis", description=__doc__)
    parser.add_argument("command", choices=["demo"])
    parser.parse_args(argv)
    print("jaxnis demo")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
