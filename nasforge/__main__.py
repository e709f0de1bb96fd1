"""``python -m nasforge`` (what ``torchrun -m nasforge`` runs on every rank): the CLI."""

from nasforge.cli import main

if __name__ == "__main__":
    main()
