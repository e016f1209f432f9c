"""The procq command as a newcomer uses it, against a real server: output into a pipe, the submit options
the API has, short id prefixes, hints for a missing key and for shell syntax, and keys that cannot lock
everyone out."""

from __future__ import annotations

import json

import pytest

from tests.cli import procq, run_py
from tests.features import create_admin_key
from tests.helpers import ServerProcess, py


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


def test_piped_ls_is_plain_complete_and_greppable(server: ServerProcess) -> None:
    long_arg = "x" * 150
    job = server.submit(py(f"print({long_arg!r})"), tags=["pipe"])
    server.wait_status(job["id"], "COMPLETED")
    shown = procq(server, "ls", COLUMNS="80")  # captured: stdout is a pipe, as with `procq ls | grep`
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split("\t") == ["ID", "STATE", "EXIT", "SUBMITTED", "RAN", "COMMAND", "TAGS"]
    row = next(line for line in lines if line.startswith(job["id"]))
    fields = row.split("\t")
    assert fields[1] == "COMPLETED" and fields[2] == "0" and fields[3] == job["enqueued_at"]
    assert long_arg in fields[5] and fields[6] == "pipe"
    assert "…" not in shown.stdout and "\x1b[" not in shown.stdout  # nothing cut, no colour codes


def test_piped_status_and_keys_are_one_value_per_line(server: ServerProcess) -> None:
    job = server.submit(py("print('x' * 10)"), tags=["a" * 60, "b" * 60])
    server.wait_status(job["id"], "COMPLETED")
    shown = procq(server, "status", job["id"], COLUMNS="40")
    fields = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
    assert fields["id"] == job["id"] and fields["state"] == "COMPLETED"
    assert fields["tags"] == f"{'a' * 60}, {'b' * 60}"


def test_every_command_answers_json_when_asked(server: ServerProcess) -> None:
    job = server.submit(py("print(1)"))
    server.wait_status(job["id"], "COMPLETED")
    for args in (("ls", "--json"), ("status", "--json", job["id"]), ("queues", "--json"), ("stats", "--json")):
        shown = procq(server, *args)
        assert shown.returncode == 0, (args, shown.stderr)
        json.loads(shown.stdout)
    rerun = procq(server, "rerun", "--json", job["id"])
    assert json.loads(rerun.stdout)["rerun_of"] == job["id"]
    removed = procq(server, "rm", "--json", job["id"])
    assert json.loads(removed.stdout) == [{"id": job["id"], "deleted": True}]


def test_submit_takes_max_attempts_env_after_cwd_and_memory_options(start_server, tmp_path) -> None:
    (tmp_path / "work" / "here").mkdir(parents=True)
    server = start_server("--cwd-root", str(tmp_path / "work"))
    first = server.submit(py("pass"))
    made = procq(
        server,
        "submit",
        "--json",
        "--max-attempts", "3",
        "--env", "STAGE=render",
        "--env", "EMPTY=",
        "--after", first["id"],
        "--cwd", "here",
        "--memory", "512M",
        "--retry-backoff", "0.5",
        "--",
        *py("import os; print(os.environ['STAGE'], os.getcwd())"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    assert job["max_attempts"] == 3 and job["env"] == {"STAGE": "render", "EMPTY": ""}
    assert job["after"] == [first["id"]] and job["max_memory_bytes"] == 512 * 1024 * 1024
    assert job["retry_backoff_seconds"] == 0.5
    done = server.wait_status(job["id"], "COMPLETED")
    assert server.get(f"/jobs/{done['id']}/result").text.split() == ["render", str(tmp_path / "work" / "here")]


def test_a_unique_id_prefix_is_enough_and_an_ambiguous_one_says_so(server: ServerProcess) -> None:
    job = server.submit(py("print('prefixed')"))
    other = server.submit(py("pass"))
    server.wait_status(job["id"], "COMPLETED")
    shown = procq(server, "status", job["id"][:24])
    assert shown.returncode == 0 and job["id"] in shown.stdout, shown.stderr
    assert procq(server, "result", job["id"][:24]).stdout == "prefixed\n"
    common = job["id"][:8]  # ids begin with the time in ms: two jobs a moment apart share this
    if other["id"].startswith(common):
        ambiguous = procq(server, "status", common)
        assert ambiguous.returncode == 1
        assert "more than one job" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    unknown = procq(server, "status", "ffffffff")
    assert unknown.returncode == 1 and "no job" in unknown.stderr.lower()


def test_a_401_says_how_to_give_a_key(start_server, jobs_dir) -> None:
    create_admin_key(jobs_dir)
    server = start_server()
    refused = procq(server, "ls")
    assert refused.returncode == 1
    assert "--key" in refused.stderr and "PROCQ_KEY" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_command_with_shell_syntax_gets_a_hint_to_use_sh_c(server: ServerProcess) -> None:
    done = procq(server, "submit", "--wait", "ls | wc -l")
    assert done.returncode == 127
    assert "sh -c" in done.stderr and "no shell" in done.stderr


def test_creating_a_first_key_without_admin_is_refused_from_both_commands(server: ServerProcess, jobs_dir) -> None:
    refused = procq(server, "keys", "create", "reader", "--scope", "jobs:read")
    assert refused.returncode == 1
    assert "admin" in refused.stderr and "Traceback" not in refused.stderr
    assert server.post("/jobs", json={"args": py("pass")}).status_code == 201  # auth is still off
    offline = run_py("keys", "--jobs-dir", str(jobs_dir), "create", "reader", "--scope", "jobs:read")
    assert offline.returncode != 0 and "admin" in offline.stderr
    assert not (jobs_dir / ".keys.json").exists() or "reader" not in (jobs_dir / ".keys.json").read_text()


def test_both_key_commands_take_the_same_syntax(server: ServerProcess, jobs_dir) -> None:
    made = run_py("keys", "--jobs-dir", str(jobs_dir), "create", "root", "--scope", "admin")
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip().splitlines()[-1]
    via_cli = procq(server, "--key", admin, "keys", "create", "ci", "--scope", "jobs:submit", "--scope", "jobs:read")
    assert via_cli.returncode == 0, via_cli.stderr
    via_run = run_py(
        "keys", "--jobs-dir", str(jobs_dir), "create", "ops", "--scope", "jobs:read", "--scope", "jobs:cancel"
    )
    assert via_run.returncode == 0, via_run.stderr
    listed = json.loads(procq(server, "--key", admin, "keys", "list", "--json").stdout)
    scopes = {key["name"]: sorted(key["scopes"]) for key in listed}
    assert scopes["ci"] == ["jobs:read", "jobs:submit"] and scopes["ops"] == ["jobs:cancel", "jobs:read"]
