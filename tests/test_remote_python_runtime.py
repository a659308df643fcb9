"""`remote deploy --runtime python` onto a board that has Debian's python3 and numpy and nothing else (an emulated
rpi5 behind a real sshd): `status` reports its numpy, deploy copies the pure-Python runtime package (no pip, no
native sources), and a farm bench through the binding gives the host's top-5."""

from __future__ import annotations

import json

import pytest

from remote.bench import BenchPlan, bench_farm
from remote.deploy import deploy, runtime_files
from remote.inventory import Board
from remote.ssh import BoardConnection
from remote.status import board_status
from tests.farm_fixtures import keygen, known_hosts_line, start_sshd
from tests.helpers import run_module

IMAGES = ("ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00000355.JPEG")


@pytest.fixture(scope="module")
def numpy_pi5(tmp_path_factory):
    from tests.emulated_board import NUMPY_ONLY, emulated_board

    root = tmp_path_factory.mktemp("numpy-farm")
    public = keygen(root / "id_farm")
    sshd = start_sshd("pi5-numpy", root / "pi5-numpy", public, emulated_board("cortex-a76", NUMPY_ONLY))
    try:
        (root / "known_hosts").write_text(known_hosts_line(sshd) + "\n")
        yield Board(name="pi5-numpy", host="127.0.0.1", port=sshd.port, preset="rpi5", user="root",
                    key_file=root / "id_farm", known_hosts=root / "known_hosts", remote_dir=str(sshd.root / "edgevit"))
    finally:
        sshd.stop()


@pytest.mark.slow
def test_python_runtime_on_a_numpy_only_board(numpy_pi5, rpi5_int8_bundle, int8_bundle, images_dir):
    status = board_status(numpy_pi5)
    assert status["reachable"] and status["arch"] == "aarch64" and status["runtime"] is None
    assert status["numpy"] and status["runtimes"] == ["native", "python"], status

    with BoardConnection(numpy_pi5) as conn:
        result = deploy(conn, rpi5_int8_bundle, "python")
    runtime = {name for name in runtime_files()}
    assert runtime <= {path.removeprefix(numpy_pi5.remote_dir + "/") for path in result.uploaded}
    assert all(name.endswith((".py", "requirements.txt")) for name in runtime) and "runtime/model.py" in runtime
    assert board_status(numpy_pi5)["runtime"] == "0.1.0"

    images = tuple(images_dir / name for name in IMAGES)
    host = run_module("runtime", "run", int8_bundle, *images, "--json")
    assert host.returncode == 0, host.stderr[-2000:]
    host_top5 = {p.rsplit("/", 1)[-1]: [e["class"] for e in top] for p, top in json.loads(host.stdout.splitlines()[-1]).items()}
    plan = BenchPlan(bundle=rpi5_int8_bundle, warmup=1, repeat=2, images=images, timeout_s=1500, attempts=1,
                     runtime="python")
    (record,) = bench_farm([numpy_pi5], plan, numpy_pi5.known_hosts.with_name("farm.jsonl"))
    assert record["status"] == "ok", record
    assert record["runtime"] == "python" and record["machine"] == "aarch64"
    # the integer GEMMs are exact; float softmax / LayerNorm vectorize differently per ISA: same top-1 and five classes
    assert {k: (v[0], sorted(v)) for k, v in record["top5"].items()} == {k: (v[0], sorted(v)) for k, v in host_top5.items()}
