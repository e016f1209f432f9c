"""`--gpus auto`: detection through a fake nvidia-smi / rocm-smi put first on PATH (this machine has no GPU)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from procq.actors.resources import detect
from procq.actors.resources.node import Gpu

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the fake tools are Python scripts with a #! line")

SMI_LIST = (
    "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-8932f937-d72c-4106-c12f-20bd9faed9f6)\n"
    "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-1b2c3d4e-0000-1111-2222-333344445555)\n"
    "  MIG 1g.5gb     Device  0: (UUID: MIG-aaaa)\n"
    "GPU 2: Tesla T4 (UUID: GPU-ffff)\n"
)


def _tool(bin_dir: Path, name: str, stdout: str, code: int = 0, argv_file: Path | None = None) -> None:
    """A script named like the vendor's tool: prints `stdout`, exits `code`, records its arguments."""
    lines = [f"#!{sys.executable}", "import sys"]
    if argv_file is not None:
        lines.append(f"open({str(argv_file)!r}, 'w').write(' '.join(sys.argv[1:]))")
    lines += [
        f"sys.stdout.write({stdout!r})",
        f"sys.stderr.write({'driver says no' if code else ''!r})",
        f"sys.exit({code})",
    ]
    script = bin_dir / name
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that alone is PATH: only the tools a test puts there exist."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


def test_auto_finds_the_gpus_nvidia_smi_lists(bin_dir: Path, tmp_path: Path) -> None:
    argv_file = tmp_path / "argv.txt"
    _tool(bin_dir, "nvidia-smi", SMI_LIST, argv_file=argv_file)
    vendor, gpus = detect.detect_gpus(use_nvml=False)
    assert vendor == "nvidia"
    assert [gpu.id for gpu in gpus] == ["0", "1", "2"]  # the MIG line is part of GPU 1, not a device
    assert gpus[0] == Gpu("0", "NVIDIA A100-SXM4-40GB", "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6")
    assert gpus[2].name == "Tesla T4"
    assert argv_file.read_text() == "-L"


def test_auto_finds_no_gpus_when_no_tool_is_there(bin_dir: Path) -> None:
    assert detect.detect_gpus(use_nvml=False) == ("nvidia", ())


def test_a_failing_nvidia_smi_means_no_gpus_and_a_warning(bin_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tool(bin_dir, "nvidia-smi", "", code=9)
    assert detect.detect_gpus(use_nvml=False) == ("nvidia", ())
    assert "nvidia-smi failed" in caplog.text and "driver says no" in caplog.text


def test_amd_gpus_are_found_through_rocm_smi_when_there_is_no_nvidia_smi(bin_dir: Path, tmp_path: Path) -> None:
    argv_file = tmp_path / "argv.txt"
    listing = '{"card1": {"Card series": "Instinct MI210"}, "card0": {"Card series": "Instinct MI210"}, "system": {}}'
    _tool(bin_dir, "rocm-smi", listing, argv_file=argv_file)
    assert detect.detect_gpus(use_nvml=False) == ("amd", (Gpu("0", "Instinct MI210"), Gpu("1", "Instinct MI210")))
    assert argv_file.read_text() == "--showproductname --json"


def test_nvidia_smi_listing_no_gpu_falls_through_to_rocm_smi(bin_dir: Path) -> None:
    _tool(bin_dir, "nvidia-smi", "No devices were found\n")
    _tool(bin_dir, "rocm-smi", '{"card0": {"Card model": "0x740f"}}')
    assert detect.detect_gpus(use_nvml=False) == ("amd", (Gpu("0", "0x740f"),))


def test_with_the_management_library_but_no_driver_detection_uses_nvidia_smi(bin_dir: Path) -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pytest.skip("a driver answers here: the library would report the real GPUs")
    except pynvml.NVMLError:
        pass
    _tool(bin_dir, "nvidia-smi", SMI_LIST)
    assert [gpu.id for gpu in detect.detect_gpus()[1]] == ["0", "1", "2"]
    assert detect.gpu_memory_by_pid() is None  # usage sampling then records no GPU memory


def test_a_server_started_with_gpus_auto_hands_out_what_nvidia_smi_lists(
    start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if detect._nvml() is not None:
        pytest.skip("NVIDIA's library answers here: the server would report the real GPUs")
    bin_dir = tmp_path / "smi-bin"
    bin_dir.mkdir()
    _tool(bin_dir, "nvidia-smi", SMI_LIST)
    # the real PATH stays behind ours (the server needs it); a real nvidia-smi later on it is never reached
    server = start_server("--gpus", "auto", env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    node = server.get("/resources").json()
    assert node["vendor"] == "nvidia"
    assert [(gpu["id"], gpu["name"]) for gpu in node["gpus"]] == [
        ("0", "NVIDIA A100-SXM4-40GB"),
        ("1", "NVIDIA A100-SXM4-40GB"),
        ("2", "Tesla T4"),
    ]
    job = server.submit(
        [sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"], requires={"gpus": 3}
    )
    server.wait_status(job["id"], "COMPLETED")
    assert server.get(f"/jobs/{job['id']}/result").text.strip() == "0,1,2"
    assert server.stop() == 0
