"""``python -m fakesmtp``: the same command as ``maillab smtp``."""

from fakesmtp.cli import smtp

if __name__ == "__main__":
    smtp(prog_name="python -m fakesmtp")
