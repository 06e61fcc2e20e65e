"""The ``enrich`` console script: checks the install (``video_enrich``), then runs the CLI."""

import sys

import video_enrich  # noqa: F401 - raises InstallClash on a worker with a clashing package


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import main as enrich_main

    return enrich_main(argv)


if __name__ == "__main__":
    sys.exit(main())
