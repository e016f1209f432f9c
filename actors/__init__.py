"""procq's actors: the Dispatcher, one Supervisor per running job, and what they stand on."""
