"""The application: CLI, commands, demo, web server."""
