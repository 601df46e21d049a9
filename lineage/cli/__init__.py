"""The `lineage` command line: thin commands, each one call into a plain function."""
