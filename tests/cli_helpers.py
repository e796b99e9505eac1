"""Running the CLI in-process the way a user's shell sees it: exit code and printed text."""

from __future__ import annotations

from safekey.cli.main import main


def run_cli(argv, capsys) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `safekey ARGV` (paths may be Path objects)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out + cap.err
