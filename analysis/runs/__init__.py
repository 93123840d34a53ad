"""Running requests: planning and keying runs, the execution core shared by the in-process
runner and torchrun's ranks, a stored run's lifecycle, shards of a request and the progress
records a computation reports. Everything that turns a request into cached results goes
through here."""
