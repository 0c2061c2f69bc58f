"""lever_cli: the click command line, a thin layer over lever_plugins."""
