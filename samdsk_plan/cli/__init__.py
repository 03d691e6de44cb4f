"""Command-line interface: argument parsing and friendly errors over the stage packages."""
