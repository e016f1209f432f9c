"""The Dispatcher actor and the plain helper objects only its thread touches."""
