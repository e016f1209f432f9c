"""Every domain error procq raises, under ProcqError; api/app.py maps each to one HTTP status."""

from __future__ import annotations


class ProcqError(Exception):
    """Base of every error procq raises on purpose."""


class ConfigError(ProcqError):
    """Raised when the TOML file named by --config / PROCQ_CONFIG cannot be used."""


class JobNotFound(ProcqError):
    """Raised when no job has the given id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"There is no job with id {job_id!r}.")
        self.job_id = job_id


class JobConflict(ProcqError):
    """Raised when an action does not fit the job's state (cancel a finished job, fetch an unfinished result)."""

    def __init__(self, job_id: str, status: str, action: str, allowed: str) -> None:
        super().__init__(f"Job {job_id} is {status}: {action} is only possible when it is {allowed}.")
        self.job_id = job_id
        self.status = status


class ShuttingDown(ProcqError):
    """Raised when a job is submitted while the server is stopping."""

    def __init__(self) -> None:
        super().__init__("The server is shutting down and takes no new jobs; retry against the next instance.")


class NotRegularFile(ProcqError):
    """Raised when a job's output file is not a regular file inside its directory (the job replaced
    it with a symlink, a FIFO or a directory): procq never follows it."""

    def __init__(self, job_id: str, name: str) -> None:
        super().__init__(
            f"Job {job_id}'s {name} is not a regular file inside its directory (a symlink or a special "
            "file the job put there); procq does not serve it."
        )


class StorageError(ProcqError):
    """Raised when a change cannot be made durable: a job's directory, files or the store's commit
    failed (permissions, disk full, a database locked or damaged)."""

    def __init__(self, what: str, exc: Exception) -> None:
        reason = getattr(exc, "strerror", None) or exc
        super().__init__(f"Could not {what}: {reason}. Nothing was stored; check the jobs directory.")
        self.reason = str(reason)


class LeaseMoved(ProcqError):
    """Raised (cluster mode) when the database refuses a change to jobs because their lease moved on:
    another run, on another node, holds them now. Not a failed commit: the change is not ours to make."""

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(f"Job(s) {', '.join(job_ids)} run under another lease now; this node's change was refused.")
        self.job_ids = job_ids


class StoreUnavailable(StorageError):
    """Raised when the store cannot be read now (cluster mode: the database cannot be reached)."""

    def __init__(self, exc: Exception) -> None:
        ProcqError.__init__(self, f"The database cannot be reached right now ({exc}); retry in a moment.")
        self.reason = str(exc)


class InvalidRequest(ProcqError):
    """Raised when a request is well-formed but names something that does not fit (an unknown `after` id)."""


class IdempotencyConflict(ProcqError):
    """Raised when an Idempotency-Key is reused within its lifetime with a different request body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"This Idempotency-Key was already used for job {job_id} with a different request body; "
            "use a new key for a different request, or resend the original body."
        )
        self.job_id = job_id


class QueueFull(ProcqError):
    """Raised when a job is submitted while --max-queued jobs are already waiting."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs are already waiting (the server's --max-queued); retry later.")
        self.limit = limit


class KeyFileError(ProcqError):
    """Raised when the keys file exists but cannot be read as a keys file."""


class KeyNotFound(ProcqError):
    """Raised when no API key has the given id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"There is no API key with id {key_id!r}.")
        self.key_id = key_id


class CommandNotAllowed(ProcqError):
    """Raised when a job's command is not on the server's allow-list (--allow-command)."""

    def __init__(self, command: str, allowed: tuple[str, ...], reason: str | None = None) -> None:
        if reason is not None:  # allowed by name, but what it resolves to may not run (a Windows batch file)
            super().__init__(f"The command {command!r} runs {reason}")
        else:
            super().__init__(
                f"The command {command!r} is not allowed on this server; allowed: {', '.join(allowed)} "
                "(by name on the server's PATH, or by absolute path)."
            )
        self.command = command


class VariableNotAllowed(ProcqError):
    """Raised when a job sets an environment variable that --allow-env does not name (with --allow-command)."""

    def __init__(self, name: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(
            f"env: {name!r} may not be set on a server with --allow-command: only the variables --allow-env "
            f"names may be (allowed: {', '.join(allowed) or 'none'}), so none can make an allowed program "
            "run other code."
        )
        self.name = name
