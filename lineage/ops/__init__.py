"""Operations behind the CLI commands: plain functions, one module per command."""
