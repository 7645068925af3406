"""``python -m cachelayer.cli``: the same as the ``cachelayer`` console script."""

from cachelayer.cli import main

main(prog_name="cachelayer")
