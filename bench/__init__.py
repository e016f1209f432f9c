"""procq's benchmark suite: scenarios against the machine's raw process limit, and a chaos harness."""
