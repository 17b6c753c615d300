"""One module per ``verifily`` subcommand."""
