"""procq's HTTP API: Falcon resources that validate requests and ask the Dispatcher."""
