"""``python -m quickchat_async``: the ``quickchat-async`` command."""

from quickchat_async.cli import main


if __name__ == "__main__":
    main()
