"""``python -m smokerdet``: the same as the ``smokerdet`` command."""

from smokerdet.cli import main

if __name__ == "__main__":
    main()
