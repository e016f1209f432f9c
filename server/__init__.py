"""The server's start-up: flags and config, log format, the waitress wrapper, the keys command, main()."""
