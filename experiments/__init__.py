"""Command-line entry points and one config file per table or sweep."""
