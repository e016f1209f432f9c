"""The Supervisor actor and what one job needs: spawning its child, the helper threads, sampling, progress."""
