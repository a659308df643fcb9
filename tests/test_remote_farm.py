"""The farm end to end with real components: sshd daemons on 127.0.0.1, two of them emulated
aarch64 boards (qemu + arm64 sysroot), deploy + bench of an rpi5 bundle, and the faults a farm meets."""

from __future__ import annotations

import json

import pytest

from remote.bench import BenchPlan, bench_farm
from remote.deploy import deploy
from remote.inventory import Board
from remote.ssh import TMP_SUFFIX, BoardConnection
from runtime.errors import EdgevitError
from tests.farm_fixtures import keygen, known_hosts_line, start_sshd
from tests.helpers import ina3221_tree, run_module

IMAGES = ["ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00000355.JPEG"]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """Three sshd boards: pi5-a and pi5-b emulate Cortex-A76 boards, 'native' runs on this machine."""
    from tests.emulated_board import emulated_board

    root = tmp_path_factory.mktemp("farm")
    user_key = root / "id_farm"
    public = keygen(user_key)
    boards = {}
    try:
        boards["pi5-a"] = start_sshd("pi5-a", root / "pi5-a", public, emulated_board("cortex-a76"))
        boards["pi5-b"] = start_sshd("pi5-b", root / "pi5-b", public, emulated_board("cortex-a76"))
        boards["native"] = start_sshd("native", root / "native", public, None)
        known_hosts = root / "known_hosts"
        known_hosts.write_text("".join(known_hosts_line(b) + "\n" for b in boards.values()))

        def record(sshd: str, preset: str, **overrides) -> Board:
            """A Board reaching sshd `sshd`; overrides change any field (name, keys, remote_dir...)."""
            fields = dict(name=sshd, host="127.0.0.1", port=boards[sshd].port, preset=preset, user="root",
                          key_file=user_key, known_hosts=known_hosts, remote_dir=str(boards[sshd].root / "edgevit"))
            return Board(**{**fields, **overrides})

        yield {"sshd": boards, "board": record, "root": root, "known_hosts": known_hosts, "user_key": user_key}
    finally:
        for board in boards.values():
            board.stop()


@pytest.mark.slow
def test_deploy_and_bench_rpi5_bundle_on_emulated_boards(farm, rpi5_bundle, host_bundle, images_dir, tmp_path):
    images = tuple(images_dir / name for name in IMAGES)
    host = run_module("runtime", "run", host_bundle, *images, "--json")
    assert host.returncode == 0, host.stderr[-2000:]
    host_top5 = {p.rsplit("/", 1)[-1]: [e["class"] for e in top] for p, top in json.loads(host.stdout.splitlines()[-1]).items()}

    boards = [farm["board"]("pi5-a", "rpi5"), farm["board"]("pi5-b", "rpi5")]
    results = tmp_path / "farm.jsonl"
    plan = BenchPlan(bundle=rpi5_bundle, warmup=1, repeat=2, images=images, timeout_s=900, attempts=1)
    records = bench_farm(boards, plan, results)
    assert [r["status"] for r in records] == ["ok", "ok"], records
    for record in records:  # run by the bundle's own bin/edgevit-run: no Python runtime deployed
        assert record["top5"] == host_top5 and record["runtime"] == "native"
        assert record["machine"] == "aarch64" and record["n"] == 2 and record["median_ms"] > 0
    assert not (farm["sshd"]["pi5-a"].root / "edgevit" / "runtime").exists()
    assert len(results.read_text().splitlines()) == 2
    report = run_module("results", "report", results, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "pi5-a" in text and "pi5-b" in text and (tmp_path / "report" / "latency.png").is_file()

    # a rerun with --resume measures nothing again; a plain rerun skips unchanged uploads
    assert bench_farm(boards, plan, results, resume=True) == []
    with BoardConnection(boards[0]) as conn:
        assert deploy(conn, rpi5_bundle).uploaded == ()


@pytest.mark.slow
def test_faults_become_error_records_and_the_rest_go_on(farm, host_bundle, tmp_path):
    sensors = ina3221_tree(tmp_path / "ina3221")
    good = farm["board"]("native", "host", python="python3", power={"sampler": "ina3221", "root_glob": sensors})
    wrong_key_file = tmp_path / "wrong_key"
    keygen(wrong_key_file)
    other_known_hosts = tmp_path / "known_hosts_other"
    impostor = tmp_path / "impostor"
    other_known_hosts.write_text(f"[127.0.0.1]:{good.port} {keygen(impostor).split()[0]} {keygen(tmp_path / 'k2').split()[1]}\n")
    boards = [
        good,
        farm["board"]("native", "host", name="bad-key", key_file=wrong_key_file),
        farm["board"]("native", "host", name="changed-host-key", known_hosts=other_known_hosts),
        farm["board"]("native", "host", name="unknown-host", known_hosts=tmp_path / "empty_known_hosts"),
        Board(name="down", host="127.0.0.1", port=1, preset="host", key_file=farm["user_key"]),
    ]
    plan = BenchPlan(bundle=host_bundle, warmup=1, repeat=3, attempts=2, backoff_s=0.1, runtime="python")
    records = {r["board"]: r for r in bench_farm(boards, plan, tmp_path / "farm.jsonl")}
    assert records["native"]["status"] == "ok" and records["native"]["n"] == 3
    assert records["native"]["runtime"] == "python" and "libtvm_runtime.so" in records["native"]["tvm_libraries"]
    native = records["native"]  # power sampled over SSH beside the benchmark, from the board's INA3221 tree
    assert native["power_mean_w"] == pytest.approx(6.0) and native["idle_power_w"] == pytest.approx(6.0)
    assert native["energy_per_inference_mj"] == pytest.approx(6.0 * native["mean_ms"])
    assert "authentication" in records["bad-key"]["error"]
    assert "CHANGED" in records["changed-host-key"]["error"]
    assert "not in known_hosts" in records["unknown-host"]["error"] and "--trust-new" in records["unknown-host"]["error"]
    assert "cannot reach" in records["down"]["error"] and records["down"]["attempts"] == 2


@pytest.mark.slow
def test_transfer_cut_halfway_leaves_no_half_written_file(farm, tmp_path, host_bundle):
    import threading
    import time

    public_key = open(f"{farm['user_key']}.pub").read().strip()
    sshd = start_sshd("flaky", tmp_path / "flaky", public_key, None)
    remote_dir = tmp_path / "flaky-files"
    library = remote_dir / "bundles" / host_bundle.name / "model.so"
    partial = library.with_name("model.so" + TMP_SUFFIX)

    def board_for(server):
        known = tmp_path / f"known_hosts_{server.port}"
        known.write_text(known_hosts_line(server) + "\n")
        return Board(name="flaky", host="127.0.0.1", port=server.port, preset="host", key_file=farm["user_key"],
                     known_hosts=known, remote_dir=str(remote_dir))

    def cut_when_upload_starts() -> None:  # the board loses power while model.so is on the wire
        deadline = time.monotonic() + 120
        while not partial.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        sshd.stop()

    cutter = threading.Thread(target=cut_when_upload_starts)
    cutter.start()
    try:
        with pytest.raises(EdgevitError, match="board flaky"):
            with BoardConnection(board_for(sshd)) as conn:
                deploy(conn, host_bundle)
    finally:
        cutter.join()
        sshd.stop()  # when the cut never came
    assert not library.exists()  # never a half-written file under the final name
    assert not partial.exists() or partial.stat().st_size < (host_bundle / "model.so").stat().st_size

    revived = start_sshd("flaky-again", tmp_path / "flaky-again", public_key, None)
    try:
        with BoardConnection(board_for(revived)) as conn:
            deploy(conn, host_bundle)
            with pytest.raises(EdgevitError, match="board flaky"):
                revived.stop()  # and a board going down while we hold a connection
                conn.run(["true"])
    finally:
        revived.stop()
    assert not partial.exists()
    from runtime.bundle import sha256_file

    assert sha256_file(library) == sha256_file(host_bundle / "model.so")


def test_read_only_remote_dir_is_one_clear_error(farm, tmp_path, host_bundle):
    board = farm["board"]("native", "host", name="ro", remote_dir="/proc/edgevit")
    with BoardConnection(board) as conn, pytest.raises(EdgevitError, match="board ro: 'mkdir"):
        deploy(conn, host_bundle)


def test_trust_new_records_the_host_key(farm, tmp_path):
    known = tmp_path / "known_hosts"
    board = farm["board"]("native", "host", known_hosts=known)
    with pytest.raises(EdgevitError, match="--trust-new"):
        BoardConnection(board)
    with BoardConnection(board, trust_new=True) as conn:
        assert conn.check(["echo", "it's quoted; $HOME"]).strip() == "it's quoted; $HOME"
    assert f"[127.0.0.1]:{board.port}" in known.read_text()
    BoardConnection(board).close()  # now known


def test_status_cli_reports_up_and_down_boards(farm, tmp_path):
    native = farm["sshd"]["native"]
    inventory = tmp_path / "farm.toml"
    inventory.write_text(
        f'[defaults]\nuser = "root"\nkey_file = "{farm["user_key"]}"\nknown_hosts = "{farm["known_hosts"]}"\n'
        f'[[board]]\nname = "native"\nhost = "127.0.0.1"\nport = {native.port}\npreset = "host"\n'
        f'remote_dir = "{native.root / "status"}"\npower = {{ sampler = "external", command = "echo 4.5" }}\n'
        f'[[board]]\nname = "gone"\nhost = "127.0.0.1"\nport = 1\npreset = "rpi5"\n'
    )
    result = run_module("remote", "--inventory", inventory, "status")
    assert result.returncode == 1  # one board is down
    rows = {r["board"]: r for r in json.loads(result.stdout.splitlines()[-1])}
    assert rows["native"]["reachable"] and rows["native"]["free_disk_mb"] > 0 and rows["native"]["runtime"] is None
    assert rows["native"]["runtimes"] == ["native", "python"] and rows["native"]["glibc"]
    assert rows["native"]["power_readable"] and rows["native"]["power_w"] == 4.5
    assert not rows["gone"]["reachable"] and "cannot reach" in rows["gone"]["error"]
    assert "gone" in result.stdout and "DOWN" in result.stdout


def test_full_remote_disk_is_one_clear_error_and_leaves_nothing(farm, tmp_path, host_bundle):
    import subprocess

    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        board = farm["board"]("native", "host", name="full", remote_dir=str(disk / "edgevit"))
        with BoardConnection(board) as conn, pytest.raises(EdgevitError, match="board full: upload of model.so failed"):
            deploy(conn, host_bundle)
        library = disk / "edgevit" / "bundles" / host_bundle.name / "model.so"
        assert not library.exists() and not library.with_name("model.so" + TMP_SUFFIX).exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)
