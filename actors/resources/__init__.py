"""What a node can give jobs (GPUs, counted resources), who holds what, and in which order jobs get it."""
